package io.rtca.pinot.pulsar;

import java.io.IOException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.pinot.spi.stream.MessageBatch;
import org.apache.pinot.spi.stream.PartitionLevelConsumer;
import org.apache.pinot.spi.stream.PermanentConsumerException;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffset;
import org.apache.pinot.spi.stream.TransientConsumerException;
import org.apache.pulsar.client.api.Message;
import org.apache.pulsar.client.api.PulsarClient;
import org.apache.pulsar.client.api.PulsarClientException;
import org.apache.pulsar.client.api.Reader;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads one partition of a Pulsar topic for Pinot with a {@link Reader} (no subscription is kept on the broker: Pinot
 * stores the offsets in its segment metadata).
 *
 * <p>The reader is opened at the requested start offset <em>inclusive</em> and kept open across fetches as long as
 * each fetch starts where the previous one ended; any other start offset (Pinot stopped inside a batch, or went back
 * after an error) closes it and opens a new one there. After a reconnect (a topic unloaded, a broker restart) the
 * client hands an inclusive reader the last message it delivered again: every message before the position already
 * covered is dropped, not only one before the fetch's start.
 *
 * <p>Errors a retry cannot fix (the topic or its namespace does not exist, authentication or authorization failed)
 * are {@link PermanentConsumerException}s, so Pinot reports them at once instead of retrying them as transient.
 */
public class PulsarPartitionLevelConsumer implements PartitionLevelConsumer {

  private static final Logger LOGGER = LoggerFactory.getLogger(PulsarPartitionLevelConsumer.class);

  /** At most this many messages per batch. */
  static final int MAX_MESSAGES_PER_BATCH = 5000;
  /** The reader's prefetch queue. */
  static final int RECEIVER_QUEUE_SIZE = 1000;
  private static final byte[] NO_DATA = new byte[0];

  private final PulsarConfig _config;
  private final String _clientId;
  private final int _partition;

  private PulsarClient _client;
  private String _partitionTopic;
  private Reader<byte[]> _reader;
  /** Where {@link #_reader} is: the offset of the next message it returns. */
  private PulsarMsgOffset _readerPosition;
  /** A reader being opened at {@link #_openingAt}, which a fetch at that offset takes over once it is open. */
  private CompletableFuture<Reader<byte[]>> _opening;
  private PulsarMsgOffset _openingAt;
  private boolean _closed;

  public PulsarPartitionLevelConsumer(PulsarConfig config, String clientId, int partition) {
    _config = config;
    _clientId = clientId;
    _partition = partition;
  }

  /** Pinot 0.11 calls the offset variant below; numeric offsets do not exist for Pulsar. */
  @Override
  public MessageBatch fetchMessages(long startOffset, long endOffset, int timeoutMillis) {
    throw new UnsupportedOperationException(
        "Pulsar offsets are ledgerId:entryId:partitionIndex:batchIndex; use fetchMessages(StreamPartitionMsgOffset, "
            + "StreamPartitionMsgOffset, int)");
  }

  /**
   * Returns the messages from {@code startOffset} (inclusive) to {@code endOffset} (exclusive, or null for no end).
   * Waits up to {@code timeoutMillis} for the first message, then takes only what has already arrived. An empty
   * batch means nothing arrived in time.
   */
  @Override
  public synchronized MessageBatch<byte[]> fetchMessages(StreamPartitionMsgOffset startOffset,
      StreamPartitionMsgOffset endOffset, int timeoutMillis)
      throws TimeoutException {
    if (_closed) {
      throw new IllegalStateException("Pulsar consumer " + _clientId + " is closed");
    }
    PulsarMsgOffset start = PulsarMsgOffset.of(startOffset);
    PulsarMsgOffset end = endOffset == null ? null : PulsarMsgOffset.of(endOffset);
    long deadline = System.currentTimeMillis() + Math.max(0, timeoutMillis);

    PulsarMessageBatch batch = new PulsarMessageBatch(start);
    try {
      if (!positionReaderAt(start, deadline)) {
        return batch; // the reader is still being opened (a broker restarting): empty, as if nothing came
      }
      Reader<byte[]> reader = _reader;
      Filled filled = fill(batch,
          waitMillis -> reader.readNext((int) Math.min(Integer.MAX_VALUE, waitMillis), TimeUnit.MILLISECONDS),
          start, end, deadline);
      if (filled._pastEnd) {
        closeReader(); // the reader is past the end offset now: the next fetch must reopen it
      } else {
        _readerPosition = filled._position;
      }
      if (filled._dropped > 0) {
        LOGGER.info("Pulsar consumer {} dropped {} message(s) handed again before {} (a reconnect)", _clientId,
            filled._dropped, filled._position);
      }
    } catch (PulsarClientException | IllegalStateException e) {
      // Start over at the requested offset on the next fetch; Pinot retries transient errors.
      closeReader();
      if (isPermanent(e)) {
        throw new PermanentConsumerException(e);
      }
      if (e instanceof IllegalStateException) {
        throw (IllegalStateException) e;
      }
      throw new TransientConsumerException(e);
    }
    return batch;
  }

  /** The next message, waiting up to {@code waitMillis} for it; null if none came. */
  interface MessageSource {
    Message<byte[]> next(long waitMillis)
        throws PulsarClientException;
  }

  /** Where {@link #fill} stopped. */
  static final class Filled {
    /** The offset after the last message taken (the fetch's start if none). */
    final PulsarMsgOffset _position;
    /** The source went past the end offset: it is not at {@link #_position}. */
    final boolean _pastEnd;
    /** Messages dropped because they came before what was already covered. */
    final int _dropped;

    Filled(PulsarMsgOffset position, boolean pastEnd, int dropped) {
      _position = position;
      _pastEnd = pastEnd;
      _dropped = dropped;
    }
  }

  /**
   * Adds to {@code batch} the messages of {@code source} from {@code start} (inclusive) to {@code end} (exclusive, or
   * null): waits until {@code deadline} for the first, then takes only what has already arrived. A message before the
   * position covered so far (the start, then the offset after the last message taken) is dropped, never handed to
   * Pinot twice.
   */
  static Filled fill(PulsarMessageBatch batch, MessageSource source, PulsarMsgOffset start, PulsarMsgOffset end,
      long deadline)
      throws PulsarClientException {
    PulsarMsgOffset position = start;
    int dropped = 0;
    while (batch.getMessageCount() < MAX_MESSAGES_PER_BATCH) {
      long waitMillis = batch.getMessageCount() == 0 ? Math.max(0L, deadline - System.currentTimeMillis()) : 0L;
      Message<byte[]> message = source.next(waitMillis);
      if (message == null) {
        break;
      }
      PulsarMsgOffset messagePosition = PulsarMsgOffset.positionOf(message.getMessageId());
      if (messagePosition.comparePosition(position) < 0) {
        dropped++;
        continue;
      }
      if (end != null && messagePosition.comparePosition(end) >= 0) {
        return new Filled(position, true, dropped);
      }
      PulsarMsgOffset next = PulsarMsgOffset.nextAfter(message.getMessageId());
      // a null value (a tombstone) has no data: as an empty payload the decoder drops its row and consumption
      // goes on; null itself made Pinot's consume loop throw and stopped the table for good
      byte[] data = message.getData();
      batch.add(data == null ? NO_DATA : data, next, message.getPublishTime());
      position = next;
    }
    return new Filled(position, false, dropped);
  }

  /**
   * An error no retry fixes: a topic or namespace that does not exist, credentials refused, a malformed topic name.
   * Anything else (the broker unreachable, a time-out, too many requests, a broker not ready) may pass.
   */
  static boolean isPermanent(Throwable error) {
    for (Throwable e = error; e != null; e = e.getCause() == e ? null : e.getCause()) {
      if (e instanceof PulsarClientException.TopicDoesNotExistException
          || e instanceof PulsarClientException.NotFoundException
          || e instanceof PulsarClientException.AuthenticationException
          || e instanceof PulsarClientException.AuthorizationException
          || e instanceof PulsarClientException.InvalidTopicNameException
          || e instanceof PulsarClientException.InvalidConfigurationException) {
        return true;
      }
    }
    return false;
  }

  /**
   * Puts the reader at {@code start}; false if it is still being opened when {@code deadline} comes. Opening
   * (looking up the partition's topic, creating the reader) runs in the background and a later fetch at the same
   * offset takes it over: a synchronous open waited the client's 30-s operation timeout whatever the fetch's
   * timeout, blocking Pinot's consumer thread (and a server stop) while the broker was down, and five failed opens
   * in a row put the segment in ERROR for good; empty fetches instead keep it consuming until the broker is back.
   * The reader is created only on a topic the look-up found: created on a missing topic, it creates it (the broker's
   * auto topic creation), and the look-up itself never does.
   */
  private boolean positionReaderAt(PulsarMsgOffset start, long deadline)
      throws PulsarClientException {
    if (_reader != null && start.equals(_readerPosition)) {
      return true;
    }
    if (_reader != null) {
      LOGGER.info("Pulsar consumer {}: fetch starts at {} but the reader is at {}; reopening", _clientId, start,
          _readerPosition);
      closeReader();
    }
    if (_opening != null && !start.equals(_openingAt)) {
      abandonOpening();
    }
    if (_opening == null) {
      if (_client == null) {
        _client = _config.createClient();
      }
      PulsarClient client = _client;
      String topic = _config.getTopicName();
      int partition = _partition;
      CompletableFuture<String> partitionTopic = _partitionTopic != null
          ? CompletableFuture.completedFuture(_partitionTopic)
          : PartitionTopics.lookUp(client, topic).thenApply(names -> PartitionTopics.select(names, topic, partition));
      LOGGER.info("Pulsar consumer {} opens a reader on {} at {} (inclusive)", _clientId,
          _partitionTopic != null ? _partitionTopic : topic, start);
      _opening = partitionTopic.thenCompose(name -> client.newReader()
          .topic(name)
          .startMessageId(start.toStartMessageId())
          .startMessageIdInclusive()
          .receiverQueueSize(RECEIVER_QUEUE_SIZE)
          .readerName(_clientId)
          .createAsync());
      _openingAt = start;
    }
    try {
      Reader<byte[]> reader = _opening.get(Math.max(0L, deadline - System.currentTimeMillis()),
          TimeUnit.MILLISECONDS);
      _opening = null;
      _openingAt = null;
      _reader = reader;
      _readerPosition = start;
      _partitionTopic = reader.getTopic();
      return true;
    } catch (TimeoutException e) {
      return false;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      abandonOpening();
      throw new IllegalStateException("Interrupted while opening a reader on Pulsar topic " + _config.getTopicName(),
          e);
    } catch (ExecutionException e) {
      _opening = null;
      _openingAt = null;
      Throwable cause = e.getCause();
      while (cause instanceof CompletionException && cause.getCause() != null) {
        cause = cause.getCause();
      }
      if (cause instanceof PulsarClientException) {
        throw (PulsarClientException) cause;
      }
      if (cause instanceof RuntimeException) { // no such partition (PartitionTopics.select)
        throw (RuntimeException) cause;
      }
      throw new IllegalStateException("Cannot open a reader on Pulsar topic " + _config.getTopicName() + ": "
          + cause, cause);
    }
  }

  /** Drops a reader still being opened (another offset is wanted, or the consumer closes): closed once it opens. */
  private void abandonOpening() {
    CompletableFuture<Reader<byte[]>> opening = _opening;
    _opening = null;
    _openingAt = null;
    if (opening != null) {
      opening.whenComplete((reader, error) -> {
        if (reader != null) {
          reader.closeAsync();
        }
      });
    }
  }

  private void closeReader() {
    Reader<byte[]> reader = _reader;
    _reader = null;
    _readerPosition = null;
    if (reader != null) {
      try {
        reader.close();
      } catch (Exception e) {
        LOGGER.warn("Pulsar consumer {}: error closing reader on {}", _clientId, _partitionTopic, e);
      }
    }
  }

  /** Where the open reader is, or null if none is open (for tests and logs). */
  synchronized PulsarMsgOffset getReaderPosition() {
    return _readerPosition;
  }

  @Override
  public synchronized void close()
      throws IOException {
    if (_closed) {
      return;
    }
    _closed = true;
    abandonOpening();
    closeReader();
    if (_client != null) {
      PulsarClients.closeInBackground(_client, "consumer " + _clientId);
      _client = null;
    }
    LOGGER.info("Pulsar consumer {} for partition {} closed", _clientId, _partition);
  }
}
