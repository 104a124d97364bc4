package sessionizer.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Stream;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KGroupedStream;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.state.SessionStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The job of sessionizer's bench pipeline, in Kafka Streams.
 *
 * <p>JSON events from the source topics, re-keyed by {@code user_id} (one repartition topic,
 * {@code <app-id>-by-user-repartition}), or with {@code --group-by record-key} grouped by their
 * record key as it is ({@code groupByKey}, no repartition topic: the sources must be co-partitioned
 * and keyed by user id), event time from {@code timestamp} (epoch ms), session
 * windows with a 60 s gap and 5 s grace, aggregating the event count, the count per {@code type}
 * and the sum of {@code details.amount}. {@code suppress(untilWindowCloses)} emits one JSON record
 * per session once stream time has passed its end + gap + grace.
 *
 * <pre>
 * java -jar target/session-job.jar --bootstrap HOST:PORT --app-id ID --source TOPIC[,TOPIC...] \
 *     --output TOPIC [--guarantee exactly_once_v2|at_least_once] [--threads 1] \
 *     [--store rocksdb|memory] [--retention-ms MS] [--group-by user_id|record-key]
 * </pre>
 *
 * Runs until SIGTERM. Logging goes to slf4j-nop; state changes and fatal errors go to stderr.
 */
public final class SessionJob {
    static final Duration GAP = Duration.ofSeconds(60);
    static final Duration GRACE = Duration.ofSeconds(5);
    static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = parseArgs(argv);
        Path stateDir = Files.createTempDirectory("session-job-");
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, required(args, "app-id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(args, "bootstrap"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args.getOrDefault("guarantee", StreamsConfig.EXACTLY_ONCE_V2));
        // 100 ms is the exactly-once default; at-least-once would default to 30 s.
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.parseInt(args.getOrDefault("threads", "1")));
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        Duration retention = Duration.ofMillis(Long.parseLong(args.getOrDefault("retention-ms", "0")));
        KafkaStreams streams = new KafkaStreams(
                topology(List.of(required(args, "source").split(",")), required(args, "output"),
                        args.getOrDefault("store", "rocksdb"), retention, args.getOrDefault("group-by", "user_id")),
                props);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.err.println("session-job: " + before + " -> " + now);
            if (now == KafkaStreams.State.NOT_RUNNING || now == KafkaStreams.State.ERROR) {
                stopped.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(error -> {
            error.printStackTrace();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            deleteTree(stateDir);
        }));
        streams.start();
        stopped.await();
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.exit(1);
        }
    }

    /**
     * The job. {@code store} is "rocksdb" (the default store) or "memory"; a {@code retention}
     * above zero keeps closed sessions that long (in event time) instead of gap + grace, which
     * makes the RocksDB store's segments longer (retention / 2, at least 60 s) and so fewer.
     * {@code groupBy} is "user_id" (re-key through a repartition topic) or "record-key" (the
     * sources' own keys, co-partitioned: no repartition topic).
     */
    static Topology topology(List<String> sources, String output, String store, Duration retention, String groupBy) {
        Serde<JsonNode> events = Serdes.serdeFrom(new JsonSerializer(), new JsonDeserializer());
        Duration kept = retention.isZero() ? GAP.plus(GRACE) : retention;
        Materialized<String, Session, SessionStore<Bytes, byte[]>> sessions = switch (store) {
            case "rocksdb" -> Materialized.as(Stores.persistentSessionStore("sessions", kept));
            case "memory" -> Materialized.as(Stores.inMemorySessionStore("sessions", kept));
            default -> throw new IllegalArgumentException("--store is rocksdb or memory, not " + store);
        };
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, JsonNode> stream =
                builder.stream(sources, Consumed.with(Serdes.String(), events).withTimestampExtractor(new EventTime()));
        KGroupedStream<String, JsonNode> grouped = switch (groupBy) {
            case "user_id" -> stream.selectKey((key, event) -> event.path("user_id").asText())
                    .groupByKey(Grouped.with("by-user", Serdes.String(), events));
            case "record-key" -> stream.groupByKey(Grouped.with(Serdes.String(), events));
            default -> throw new IllegalArgumentException("--group-by is user_id or record-key, not " + groupBy);
        };
        grouped.windowedBy(SessionWindows.ofInactivityGapAndGrace(GAP, GRACE))
                .aggregate(
                        Session::new,
                        (user, event, session) -> session.add(event),
                        (user, a, b) -> a.merge(b),
                        sessions.withKeySerde(Serdes.String())
                                .withValueSerde(Serdes.serdeFrom(new Session.Ser(), new Session.De())))
                .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                .toStream()
                .filter((window, session) -> session != null)
                .map((window, session) -> KeyValue.pair(window.key(), session.render(window)))
                .to(output, Produced.with(Serdes.String(), Serdes.String()));
        return builder.build();
    }

    /** Event time: the {@code timestamp} field of the (already deserialized) event, epoch ms. */
    static final class EventTime implements TimestampExtractor {
        @Override
        public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
            JsonNode time = record.value() instanceof JsonNode event ? event.get("timestamp") : null;
            // Negative: Kafka Streams drops the record (and counts it as skipped).
            return time != null && time.canConvertToLong() ? time.asLong() : -1;
        }
    }

    /** A session's aggregate: event count, count per type, sum of details.amount. */
    static final class Session {
        long count;
        long amount;
        final Map<String, Long> types = new TreeMap<>();

        Session add(JsonNode event) {
            count++;
            amount += event.path("details").path("amount").asLong();
            types.merge(event.path("type").asText(), 1L, Long::sum);
            return this;
        }

        Session merge(Session other) {
            Session merged = new Session();
            merged.count = count + other.count;
            merged.amount = amount + other.amount;
            merged.types.putAll(types);
            other.types.forEach((type, n) -> merged.types.merge(type, n, Long::sum));
            return merged;
        }

        /** The shape of sessionizer's record value (without its formatted timestamp). */
        String render(Windowed<String> window) {
            long start = window.window().start();
            long end = window.window().end();
            ObjectNode record = JSON.createObjectNode().put("event", "session").put("user_id", window.key());
            ObjectNode value = record.putObject("value")
                    .put("session_start_ms", start)
                    .put("session_end_ms", end)
                    .put("event_count", count)
                    .put("duration_ms", end - start);
            ObjectNode byType = value.putObject("types");
            types.forEach(byType::put);
            value.put("amount", amount);
            return record.toString();
        }

        static final class Ser implements Serializer<Session> {
            @Override
            public byte[] serialize(String topic, Session session) {
                if (session == null) {
                    return null;
                }
                ByteArrayOutputStream bytes = new ByteArrayOutputStream(64);
                try (DataOutputStream out = new DataOutputStream(bytes)) {
                    out.writeLong(session.count);
                    out.writeLong(session.amount);
                    out.writeInt(session.types.size());
                    for (Map.Entry<String, Long> entry : session.types.entrySet()) {
                        out.writeUTF(entry.getKey());
                        out.writeLong(entry.getValue());
                    }
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
                return bytes.toByteArray();
            }
        }

        static final class De implements Deserializer<Session> {
            @Override
            public Session deserialize(String topic, byte[] data) {
                if (data == null) {
                    return null;
                }
                Session session = new Session();
                try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(data))) {
                    session.count = in.readLong();
                    session.amount = in.readLong();
                    for (int i = in.readInt(); i > 0; i--) {
                        session.types.put(in.readUTF(), in.readLong());
                    }
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
                return session;
            }
        }
    }

    static final class JsonSerializer implements Serializer<JsonNode> {
        @Override
        public byte[] serialize(String topic, JsonNode node) {
            try {
                return node == null ? null : JSON.writeValueAsBytes(node);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    static final class JsonDeserializer implements Deserializer<JsonNode> {
        @Override
        public JsonNode deserialize(String topic, byte[] data) {
            try {
                return data == null ? null : JSON.readTree(data);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    static Map<String, String> parseArgs(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i += 2) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("expected --name value pairs, got " + String.join(" ", argv));
            }
            args.put(argv[i].substring(2), argv[i + 1]);
        }
        return args;
    }

    static String required(Map<String, String> args, String name) {
        String value = args.get(name);
        if (value == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return value;
    }

    static void deleteTree(Path root) {
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(path -> path.toFile().delete());
        } catch (IOException e) {
            System.err.println("session-job: could not delete " + root + ": " + e);
        }
    }
}
