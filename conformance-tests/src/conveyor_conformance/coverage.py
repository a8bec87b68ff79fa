"""What the harness protocol can observe, requirement by requirement.

The suite drives an implementation only through the protocol: it publishes, claims, reports
outcomes in place of handlers and reads jobs back, one request at a time, on a clock it controls.
Some requirements govern what never crosses the protocol: how an implementation encodes values of
its own language, its transactions under faults, concurrent requests, the messages of its broker.
The report shows those as ``not_testable`` with the reason, instead of ``untested`` (no executed
check exercises it), and never as passed. Other requirements are observable only in part; the
report keeps their status from the checks and adds what the checks leave out.

Requirements on what a worker does with its handlers (``WORKER_SIDE``) are exercised only by the
checks of worker mode (the capability ``worker``: the adapter runs its own worker over scripted
handlers). Checks in which the harness reports outcomes itself exercise their store side alone,
so they never make such a requirement pass: without a passing worker-mode check it is
``untested``.

An implementation covers both kinds with its own tests; the reference library's are in
``python/tests``.
"""

from __future__ import annotations

#: Requirements no check through the protocol can observe, and why.
NOT_TESTABLE: dict[str, str] = {
    **{
        f"AMQP-00{n}": (
            "it governs the messages on an AMQP broker (exchange, queue names, properties, "
            "acknowledgements), which the harness never sees; the reference library's broker "
            "tests check it against RabbitMQ."
        )
        for n in range(1, 7)
    },
    "VER-007": (
        "the documents it governs (machine files, retry presets) ship with the implementation; "
        "the harness cannot hand it one. The start handshake compares spec versions (VER-002)."
    ),
    "MACH-007": (
        "it governs events fired concurrently on one record, and the protocol sends one request "
        "at a time (PROTO-001). The checks of stale lease tokens (LEASE-007) cover the "
        "conditional write as far as sequential requests can."
    ),
    "CODEC-002": (
        "it governs how an implementation encodes values of its own language (bytes, instants, "
        "decimals, UUIDs); the harness sends payloads already encoded as JSON, so no language "
        "value crosses the protocol. Malformed typed values in JSON are checked under CODEC-004."
    ),
    "CODEC-005": (
        "payloads are decoded only for a handler, into values of the implementation's own "
        "language; even in worker mode, what a decoder builds never crosses the protocol."
    ),
    "RESULT-004": (
        "waiting blocks the caller until a job ends, and the protocol sends one request at a "
        "time (PROTO-001): no other request could end the job meanwhile. The library's own "
        "tests check it on every store."
    ),
    "CRON-006": (
        "it governs when a process evaluates its schedules on its own; the harness evaluates "
        "them with schedule_tick on the clock it controls."
    ),
    "CONC-004": (
        "the harness never sees broker messages; the checks see the claims the slots allow."
    ),
    "BROKER-005": (
        "no protocol command runs the repair loop, which requeues jobs on its own schedule; "
        "the harness decides every state change."
    ),
    "BROKER-006": (
        "the harness never sees broker messages: the envelope and what a consumer does with a "
        "message that is not one stay between the implementation and its broker."
    ),
    "BROKER-010": (
        "the harness never sees broker messages, and the repair loop's hand-over before each "
        "claim (BROKER-008) gives every due job a message: which message a claim used, and "
        "whether the consumer handed one back, stay between the implementation and its broker."
    ),
}

#: Requirements the checks observe only in part: what they leave out.
PARTLY_TESTABLE: dict[str, str] = {
    "PAUSE-004": (
        "the checks see a claim that names a job of a paused queue (a consumer's) return "
        "nothing; that a resumed queue's jobs are handed to the broker again happens between "
        "the implementation and its broker (the library's own tests check it)."
    ),
    "CRON-003": (
        "the checks evaluate a schedule again after a run was recorded, as a second process "
        "or a restart would, and see nothing published twice; two processes recording one fire "
        "time at the same moment need concurrent requests, which the protocol does not send "
        "(the library's own tests race them on every store)."
    ),
    "RESULT-002": (
        "the checks see results refused at the limits; that a worker reports a permanent error "
        "in place of a result it cannot report is checked in worker mode (capability `worker`)."
    ),
    "MACH-010": (
        "the checks see notifications delivered once per firing and never for a refused event; "
        "that a firing commits in one transaction, that a rolled-back one notifies nothing and "
        "that a failing notifier changes nothing need faults the protocol cannot inject."
    ),
    "CODEC-004": (
        "the checks see a malformed typed value refused with invalid_payload at publish (the "
        "recommended outcome) or stored unchanged; what a handler would be handed and the "
        "permanent error of its request happen in a worker, which the harness replaces."
    ),
    "BROKER-012": (
        "the checks see the store answer for a job whatever its messages say; what travels "
        "through the broker, and when, is invisible to the harness."
    ),
    "BROKER-002": (
        "the checks fire broker_publish_failed through the fire command; a hand-over the broker "
        "does not confirm needs a broker fault the protocol cannot inject."
    ),
    "BROKER-011": (
        "the checks claim one job twice by id, as a message delivered twice does; when a "
        "consumer acknowledges its message is invisible to the harness."
    ),
    "BROKER-007": (
        "the checks see claims keep the order of ORDER-002 across queues and bands, and the job "
        "a message named claimed later; the messages themselves are invisible to the harness."
    ),
    "BROKER-008": (
        "the checks see a job that became due after a delay claimed; a message the broker lost "
        "needs a broker fault the protocol cannot inject."
    ),
    "BROKER-009": (
        "the checks see an unblocked job claimed at once; whether its message came when the "
        "blocking job ended or from the repair loop is invisible to the harness."
    ),
}

#: Requirements on what a worker does with its handlers: only a passing check of worker mode
#: (a check that requires the capability ``worker``) makes them pass. What the other checks
#: cover of each, and what only a worker shows.
WORKER_SIDE: dict[str, str] = {
    "OUT-003": (
        "how a worker classifies its handlers' errors, a missing handler or a payload it cannot "
        "decode shows only when it runs handlers (worker mode)."
    ),
    "OUT-004": (
        "reports of `waiting` show the refunded attempt and the stored delay; that a worker "
        "records the delay its handler gives shows only when it runs handlers (worker mode)."
    ),
    "OUT-006": (
        "reports of `die` show the underlying error recorded; that the worker then claims no "
        "other job and stops shows only when it runs handlers (worker mode)."
    ),
    "TIMEOUT-002": (
        "reports of `timeout` show how it is recorded; that a worker ends an attempt at its "
        "timeout shows only when it runs handlers (worker mode)."
    ),
    "TIMEOUT-003": (
        "what a worker does with the handler of an attempt it ended at its timeout shows only "
        "when it runs handlers (worker mode); the refusal of a late report is LEASE-007's."
    ),
    "MULTI-003": (
        "claims show where a job resumes; that the handler of a succeeded request never runs "
        "again shows only when the worker runs handlers (worker mode)."
    ),
    "MULTI-004": (
        "reports show the outcome applied to the whole job; that the requests after a failed "
        "one do not run under its claim shows only when the worker runs handlers (worker mode)."
    ),
}

#: The capability whose checks exercise ``WORKER_SIDE``.
WORKER = "worker"
