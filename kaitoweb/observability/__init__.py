"""What an operator watches kaitoweb by: probes, structured logs and Prometheus metrics.

    /healthz    the process answers (no database, no broker, no login): a liveness probe
    /readyz     the database and the broker answer, each within a short timeout; 503 with a JSON
                body naming what is down: a readiness probe
    /metrics    Prometheus text format: requests, Celery tasks, experiments and deployments by
                status; a METRICS_TOKEN bearer token, or loopback only when none is set

`logs` formats every log line as one JSON object (LOG_FORMAT=json) with the request id, user id
and path of the request, or the Celery task's name and id, that it was written under.
"""
