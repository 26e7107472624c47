"""consume(consumer, topic, count, emit): reads count records of topic with a confluent_kafka
Consumer and passes each to emit; gives up after a minute without a record, and fails then."""


def consume(consumer, topic, count, emit):
    consumer.subscribe([topic])
    seen = 0
    idle = 0
    while seen < count and idle < 60:
        msg = consumer.poll(1.0)
        if msg is None:
            idle += 1
            continue
        if msg.error():
            raise SystemExit(str(msg.error()))
        emit(msg)
        seen += 1
    consumer.close()
    if seen < count:
        raise SystemExit(f"read {seen} of {count} records")
