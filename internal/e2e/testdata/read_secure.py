"""Reads a topic over SASL_SSL (TLS, SCRAM-SHA-512) with Confluent's own client (librdkafka) and
prints each record as a JSON line: {"key": ..., "value": ...}, the bytes as text (null when absent).
The password comes from the environment, CDCD_KAFKA_SASL_PASSWORD. Usage:
read_secure.py BROKERS CA_FILE USER TOPIC COUNT"""
import json
import os
import sys

from confluent_kafka import Consumer

from consume import consume

brokers, ca_file, user, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
consumer = Consumer({"bootstrap.servers": brokers, "group.id": "cdcd-secure-interop", "auto.offset.reset": "earliest",
                     "isolation.level": "read_committed", "enable.auto.commit": False,
                     "security.protocol": "SASL_SSL", "ssl.ca.location": ca_file,
                     "ssl.endpoint.identification.algorithm": "https",
                     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                     "sasl.password": os.environ["CDCD_KAFKA_SASL_PASSWORD"]})


def emit(msg):
    text = lambda b: b.decode() if b is not None else None
    print(json.dumps({"key": text(msg.key()), "value": text(msg.value())}), flush=True)


consume(consumer, topic, count, emit)
