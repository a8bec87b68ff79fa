"""The retry policy of the suite's ``work`` jobs, shared by the workers and the publisher
(the policy is stored with each job when it is published).

Handlers never fail; a job is retried only after a fault cut its run short (its lease lapsed
and it was rescued): retry after 200 ms so that scenarios end in seconds, not minutes.
"""

from conveyor.retry import RetryPolicy

RETRY = RetryPolicy(backoff="constant", initial_delay_ms=200, max_delay_ms=200, max_attempts=1000)
