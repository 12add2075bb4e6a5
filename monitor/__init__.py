"""monitor: the stream processor — Kafka posts -> micro-batches -> classifier -> Redis TimeSeries, topics, alerts.

Data flows one way, one module per step: ``post`` (typed input, parse + DLQ envelope) -> ``app`` (Faust agent,
``noack_take`` batches) -> ``pipeline`` (one batch end to end) -> ``inference`` (the model, in one child process by
default: ``EM_MONITOR_INFERENCE_ISOLATION``) -> ``store`` (idempotent Redis writes, ``schema`` keys) -> ``alerts``
(spike rule, webhook/topic/log/Redis).
``replay`` reuses ``pipeline`` through aiokafka; ``settings`` holds every knob (``EM_MONITOR_*``); ``metrics`` serves
``/metrics`` and ``/health``; ``faust_tuning`` shortens Faust's fetch wait for the tansu broker; ``cli`` has the
``worker`` and ``replay`` subcommands.
"""
