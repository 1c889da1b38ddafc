"""Prometheus metrics of one service instance (own registry, so several apps can live in one process).

No label carries anything about a client: endpoints are route templates, pairs are model ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mt_http_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.request_latency = Histogram("mt_http_request_duration_seconds", "HTTP request latency.", ["endpoint"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("mt_http_requests_in_flight", "HTTP requests being handled.", registry=r)
        self.queue_wait = Histogram("mt_queue_wait_seconds", "Time a sentence waited in the queue before its batch "
                                    "started (continuous scheduler: before it was admitted).",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_inference = Histogram("mt_batch_inference_seconds", "Wall time of one decoder batch "
                                         "(continuous scheduler: of one decoder step).", ["model"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("mt_batch_size_sentences", "Sentences per decoder batch "
                                    "(continuous scheduler: sentences active in a step).", ["model"],
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.padding_ratio = Histogram("mt_batch_padding_ratio", "Share of padding in a batch's source tokens.",
                                       ["model"], buckets=RATIO_BUCKETS, registry=r)
        self.sentences = Counter("mt_sentences_translated", "Sentences translated by the model.", ["model"],
                                 registry=r)
        self.generated_tokens = Counter("mt_generated_tokens", "Target tokens generated (best hypotheses).",
                                        ["model"], registry=r)
        self.active_rows = Gauge("mt_active_rows", "Decoder rows (sentences x beam) in the continuous batch.",
                                 ["model"], registry=r)
        self.decoder_steps = Counter("mt_decoder_steps", "Decoder calls of the continuous scheduler.", ["model"],
                                     registry=r)
        self.queue_depth = Gauge("mt_queue_depth_sentences", "Sentences waiting for a batch.", registry=r)
        self.rejections = Counter("mt_rejections", "Requests refused or abandoned, by reason.", ["reason"],
                                  registry=r)
        self.dropped_sentences = Counter("mt_dropped_sentences", "Queued sentences dropped before decoding "
                                         "(deadline passed or request cancelled).", ["reason"], registry=r)
        self.cache_hits = Counter("mt_cache_hits", "Sentences answered from the translation cache.", ["model"],
                                  registry=r)
        self.cache_misses = Counter("mt_cache_misses", "Sentences looked up in the translation cache and not "
                                    "found (then decoded).", ["model"], registry=r)
        self.cache_entries = Gauge("mt_cache_entries", "Sentences held in the translation cache.", registry=r)
        self.cache_bytes = Gauge("mt_cache_bytes", "Estimated memory of the translations held in the cache.",
                                 registry=r)
        self.model_info = Gauge("mt_model_info", "Served models (value 1).",
                                ["model", "source", "target", "architecture", "decoder", "provider"], registry=r)
        self.ready = Gauge("mt_ready", "1 once every model is loaded and warmed up.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
