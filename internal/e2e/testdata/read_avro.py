"""Reads a topic of Confluent-format Avro records with Confluent's own client and prints each record
as a JSON line: {"key": ..., "value": ...} (null for a tombstone). Usage:
read_avro.py BROKERS REGISTRY_URL TOPIC COUNT"""
import json
import sys

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consume import consume

brokers, registry, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# A request the registry leaves unanswered is given up after 10 s and retried, not waited on for ever.
deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry, "timeout": 10, "max.retries": 5}))
consumer = Consumer({"bootstrap.servers": brokers, "group.id": "cdcd-avro-interop", "auto.offset.reset": "earliest",
                     "isolation.level": "read_committed", "enable.auto.commit": False})


def emit(msg):
    key = deserialize(msg.key(), SerializationContext(topic, MessageField.KEY)) if msg.key() else None
    value = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE)) if msg.value() else None
    print(json.dumps({"key": key, "value": value}, default=lambda b: b.hex() if isinstance(b, bytes) else str(b)), flush=True)


consume(consumer, topic, count, emit)
