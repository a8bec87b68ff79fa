// Conveyor dashboard: confirmed actions through the JSON API, and polling refresh.
// No framework and no inline script (the Content-Security-Policy forbids both).
"use strict";

(function () {
  const body = document.body;
  const refreshMs = Number(body.dataset.refreshMs || 0);
  const flash = document.getElementById("flash");
  let busy = false;

  function show(message, kind) {
    flash.textContent = message;
    flash.className = kind;
    flash.hidden = false;
  }

  // Replace the page's content with a fresh copy, keeping focus and the open details.
  // Polling leaves the page alone while the user is busy with it; after an action it does not.
  async function refresh(forced) {
    if (!forced && (busy || document.hidden)) return;
    const response = await fetch(window.location.href, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    });
    if (!response.ok) return;
    const html = await response.text();
    const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content");
    const content = document.getElementById("content");
    if (!fresh || !content || fresh.innerHTML === content.innerHTML) return;
    if (!forced) {
      const focused = document.activeElement;
      if (content.contains(focused) && focused !== content) return;
      if (content.querySelector("details[open]")) return;
    }
    content.innerHTML = fresh.innerHTML;
  }

  async function act(button) {
    const question = button.dataset.confirm;
    if (question && !window.confirm(question)) return;
    busy = true;
    button.disabled = true;
    try {
      const response = await fetch(button.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: "{}",
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        const message = data.error ? data.error.message : response.statusText;
        show(`${button.textContent.trim()} failed: ${message}`, "error");
        return;
      }
      show(`${button.textContent.trim()}: done.`, "ok");
    } finally {
      busy = false;
      button.disabled = false;
    }
    await refresh(true);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.action");
    if (button) {
      event.preventDefault();
      act(button);
    }
  });

  if (refreshMs > 0) {
    window.setInterval(() => {
      refresh(false).catch(() => {});
    }, refreshMs);
  }
})();
