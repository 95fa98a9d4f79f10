import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.bson.BsonTimestamp;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.oplog.CollectionBackedOplog;
import de.bwaldvogel.mongo.oplog.Oplog;
import io.netty.channel.Channel;

import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Stream;

/**
 * Launches mongo-java-server, an in-memory MongoDB STAND-IN, for tests and the demo.
 *
 * <p>The bundled main binds a fixed port with the oplog off. This launcher binds a free
 * port on 127.0.0.1 (or the one given), enables the oplog so change streams work, and
 * prints {@code LISTENING <port>} once it accepts connections.
 *
 * <p>It also brings replies closer to what a real replica-set member sends, because
 * drivers and the CDC service rely on it:
 * <ul>
 *   <li>{@code operationTime} on every command reply (pymongo needs it to open a change stream);
 *   <li>{@code postBatchResumeToken} on change-stream batches, so a quiet stream still has a
 *       position to checkpoint. When a batch is empty it covers only what was stamped more
 *       than a second ago, so an event still being written is never skipped;
 *   <li>{@code ns} on change events of collection streams;
 *   <li>update events in MongoDB's documented shape: {@code documentKey} is {@code {_id}}
 *       (the stand-in puts the update specification there), {@code updateDescription} is
 *       derived from the specification when the update is written (as the oplog keeps it), a replacement is reported as {@code replace} with the
 *       new document, and {@code fullDocument} is the looked-up document, null when it is gone,
 *       or absent when the stream did not ask for it; delete events carry no fullDocument.
 * </ul>
 * Everything else (no pre-images, no wallTime, no transactions in the stream,
 * collection-level streams only) is the stand-in's own behaviour.
 */
public final class MongoStandIn {

    /** Claims MongoDB 5.0 (wire version 13): pymongo 4.20 refuses servers below wire version 9. */
    private static final MongoVersion CLAIMED_VERSION = new MongoVersion() {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(5, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return 13;
        }
    };

    private MongoStandIn() {
    }

    public static void main(String[] args) throws Exception {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 0;
        StandInBackend backend = new StandInBackend();
        backend.version(CLAIMED_VERSION);
        MongoServer server = new MongoServer(backend);
        server.enableOplog();
        server.bind("127.0.0.1", port);
        InetSocketAddress address = server.getLocalAddress();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.shutdownNow();
            stopped.countDown();
        }));
        System.out.println("LISTENING " + address.getPort());
        System.out.flush();
        stopped.await();
    }

    /** A change-stream cursor this backend opened: its namespace, options and last position. */
    private static final class StreamCursor {
        final String database;
        final String collection;
        final boolean wantsFullDocument;
        long position;

        StreamCursor(String database, String collection, boolean wantsFullDocument, long position) {
            this.database = database;
            this.collection = collection;
            this.wantsFullDocument = wantsFullDocument;
            this.position = position;
        }
    }

    /**
     * An update as the oplog holds it: the specification the stand-in put aside, and the
     * updateDescription derived from it when it was written. MongoDB's oplog keeps the
     * change itself, so an event read again after a resume reports the same values; derived
     * from the document at read time, a later update's values would show under this event's id.
     */
    private record RecordedUpdate(Document specification, Document description) {
    }

    private static final Set<String> FULL_DOCUMENT_MODES = Set.of("updateLookup", "whenAvailable", "required");

    static final class StandInBackend extends MemoryBackend {

        private final Map<Long, StreamCursor> streams = new ConcurrentHashMap<>();
        /** Each update in the oplog, by oplog timestamp. */
        private final Map<Long, RecordedUpdate> updates = new ConcurrentHashMap<>();
        private volatile Object oplogClock;
        private volatile Method oplogClockNow;

        @Override
        public Document handleCommand(Channel channel, String database, String command, Document query) {
            // Read before the command runs, so a stream opened without a start position
            // never claims a position past the one the stand-in's cursor starts at.
            BsonTimestamp before = clockNow();
            Document reply = super.handleCommand(channel, database, command, query);
            if (reply == null) {
                return null;
            }
            if ("aggregate".equalsIgnoreCase(command)) {
                onAggregate(database, query, reply, before);
            } else if ("getMore".equalsIgnoreCase(command)) {
                onGetMore(query, reply);
            }
            if (!reply.containsKey("operationTime")) {
                BsonTimestamp now = clockNow();
                if (now != null) {
                    reply.put("operationTime", now);
                }
            }
            return reply;
        }

        private void onAggregate(String database, Document query, Document reply, BsonTimestamp before) {
            Object pipeline = query.get("pipeline");
            if (!(pipeline instanceof List<?> stages) || stages.isEmpty()
                || !(stages.get(0) instanceof Document first)
                || !(first.get("$changeStream") instanceof Document options)
                || !(query.get("aggregate") instanceof String collection)
                || !(reply.get("cursor") instanceof Document cursor)) {
                return;
            }
            boolean wantsFullDocument = FULL_DOCUMENT_MODES.contains(String.valueOf(options.get("fullDocument")));
            StreamCursor stream = new StreamCursor(database, collection, wantsFullDocument, startPosition(options, before));
            onBatch(stream, cursor, (List<?>) cursor.get("firstBatch"));
            long id = ((Number) cursor.get("id")).longValue();
            if (id != 0) {
                streams.put(id, stream);
            }
        }

        private void onGetMore(Document query, Document reply) {
            if (!(query.get("getMore") instanceof Number idNumber)
                || !(reply.get("cursor") instanceof Document cursor)) {
                return;
            }
            long id = idNumber.longValue();
            StreamCursor stream = streams.get(id);
            if (stream == null) {
                return;
            }
            onBatch(stream, cursor, (List<?>) cursor.get("nextBatch"));
            Object newId = cursor.get("id");
            if (newId instanceof Number number && number.longValue() == 0) {
                streams.remove(id);
            }
        }

        private void onBatch(StreamCursor stream, Document cursor, List<?> batch) {
            if (batch == null) {
                return;
            }
            long position = stream.position;
            for (Object item : batch) {
                if (item instanceof Document event) {
                    if (!event.containsKey("ns")) {
                        event.put("ns", new Document("db", stream.database).append("coll", stream.collection));
                    }
                    if (event.get("_id") instanceof Document token && token.get("_data") instanceof String data) {
                        long eventPosition = Long.parseUnsignedLong(data, 16);
                        position = Math.max(position, eventPosition);
                        reshapeEvent(event, stream, eventPosition);
                    }
                }
            }
            if (batch.isEmpty()) {
                position = Math.max(position, settledPosition());
            }
            stream.position = position;
            if (position > 0) {
                cursor.put("postBatchResumeToken", new Document("_data", Long.toHexString(position)));
            }
        }

        private void reshapeEvent(Document event, StreamCursor stream, long eventPosition) {
            Object operation = event.get("operationType");
            if ("delete".equals(operation)) {
                event.remove("fullDocument");
                return;
            }
            if (!"update".equals(operation)) {
                return;
            }
            RecordedUpdate update = updates.get(eventPosition);
            if (update == null) {
                return;
            }
            Document specification = update.specification();
            Document documentKey = (Document) event.get("documentKey");
            Object lookedUp = event.get("fullDocument");
            Document current = lookedUp instanceof Document document && !document.isEmpty() ? document : null;
            boolean replacement = specification.keySet().stream().noneMatch(key -> key.startsWith("$"));
            if (replacement) {
                Document replaced = new Document("_id", documentKey.get("_id"));
                specification.forEach((key, value) -> {
                    if (!"_id".equals(key)) {
                        replaced.put(key, value);
                    }
                });
                event.put("operationType", "replace");
                event.put("fullDocument", replaced);
                return;
            }
            event.put("updateDescription", update.description());
            if (stream.wantsFullDocument) {
                event.put("fullDocument", current);
            } else {
                event.remove("fullDocument");
            }
        }

        /** updatedFields and removedFields as MongoDB reports them, from the update operators
         *  and, for operators other than $set and $unset, the values they left in the document. */
        private static Document describeUpdate(Document specification, Document after) {
            Document updatedFields = new Document();
            List<String> removedFields = new ArrayList<>();
            specification.forEach((operator, argument) -> {
                if (!(argument instanceof Document fields)) {
                    return;
                }
                for (String path : fields.keySet()) {
                    if ("$unset".equals(operator)) {
                        removedFields.add(path);
                    } else if ("$set".equals(operator)) {
                        updatedFields.put(path, fields.get(path));
                    } else if (after != null) {
                        updatedFields.put(path, valueAt(after, path));
                    }
                }
            });
            return new Document("updatedFields", updatedFields)
                .append("removedFields", removedFields)
                .append("truncatedArrays", new ArrayList<>());
        }

        private static Object valueAt(Document document, String dottedPath) {
            Object value = document;
            for (String part : dottedPath.split("\\.")) {
                if (!(value instanceof Document nested)) {
                    return null;
                }
                value = nested.get(part);
            }
            return value;
        }

        /**
         * The stand-in's oplog, over a collection that keeps each update's specification
         * aside and stores {@code {_id}} in its place, which is what the stand-in then
         * reports as the event's documentKey.
         */
        @Override
        protected Oplog createOplog() {
            MongoDatabase local = resolveDatabase("local");
            @SuppressWarnings("unchecked")
            MongoCollection<Document> collection = (MongoCollection<Document>) local.resolveCollection("oplog.rs", false);
            if (collection == null) {
                @SuppressWarnings("unchecked")
                MongoCollection<Document> created = (MongoCollection<Document>) local.createCollectionOrThrowIfExists("oplog.rs");
                collection = created;
            }
            return new CollectionBackedOplog(this, recordingUpdates(collection), getCursorRegistry());
        }

        @SuppressWarnings("unchecked")
        private MongoCollection<Document> recordingUpdates(MongoCollection<Document> collection) {
            return (MongoCollection<Document>) Proxy.newProxyInstance(
                MongoCollection.class.getClassLoader(),
                new Class<?>[] {MongoCollection.class},
                (proxy, method, arguments) -> {
                    if ("addDocument".equals(method.getName()) && arguments.length == 1) {
                        arguments = new Object[] {setUpdateAside((Document) arguments[0])};
                    } else if ("addDocuments".equals(method.getName()) && arguments.length == 1) {
                        arguments = new Object[] {((Stream<Document>) arguments[0]).map(this::setUpdateAside)};
                    }
                    try {
                        return method.invoke(collection, arguments);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        }

        private Document setUpdateAside(Document oplogEntry) {
            if ("u".equals(oplogEntry.get("op")) && oplogEntry.get("o2") instanceof Document key
                && oplogEntry.get("o") instanceof Document specification
                && oplogEntry.get("ts") instanceof BsonTimestamp timestamp) {
                Document after = documentNow(String.valueOf(oplogEntry.get("ns")), key);
                updates.put(timestamp.getValue(), new RecordedUpdate(specification, describeUpdate(specification, after)));
                oplogEntry.put("o", key);
            }
            return oplogEntry;
        }

        /** The document as it is now: the oplog entry is written right after the update applied. */
        private Document documentNow(String namespace, Document key) {
            int dot = namespace.indexOf('.');
            if (dot < 0) {
                return null;
            }
            MongoCollection<?> collection = resolveDatabase(namespace.substring(0, dot))
                .resolveCollection(namespace.substring(dot + 1), false);
            if (collection == null) {
                return null;
            }
            return collection.handleQueryAsStream(new Document("_id", key.get("_id"))).findFirst().orElse(null);
        }

        /** The position a stream opens at, as the stand-in's own cursor computes it. */
        private long startPosition(Document options, BsonTimestamp before) {
            for (String key : new String[] {"startAfter", "resumeAfter"}) {
                if (options.get(key) instanceof Document token && token.get("_data") instanceof String data) {
                    return Long.parseUnsignedLong(data, 16);
                }
            }
            if (options.get("startAtOperationTime") instanceof BsonTimestamp start) {
                return start.getValue() - 1;
            }
            return before == null ? 0 : before.getValue();
        }

        /** Everything stamped before the previous second is already in the oplog. */
        private long settledPosition() {
            long seconds = System.currentTimeMillis() / 1000;
            return ((seconds - 1) << 32) - 1;
        }

        /** The oplog clock's current timestamp; the stand-in keeps it private. */
        private BsonTimestamp clockNow() {
            try {
                if (oplogClockNow == null) {
                    if (oplog == null) {
                        return null;
                    }
                    Field field = oplog.getClass().getDeclaredField("oplogClock");
                    field.setAccessible(true);
                    Object clock = field.get(oplog);
                    Method now = clock.getClass().getDeclaredMethod("now");
                    now.setAccessible(true);
                    oplogClock = clock;
                    oplogClockNow = now;
                }
                return (BsonTimestamp) oplogClockNow.invoke(oplogClock);
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("mongo-java-server changed its oplog clock", e);
            }
        }
    }
}
