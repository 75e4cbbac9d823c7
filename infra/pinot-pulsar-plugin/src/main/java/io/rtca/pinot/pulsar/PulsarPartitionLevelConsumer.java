package io.rtca.pinot.pulsar;

import java.io.IOException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.pinot.spi.stream.MessageBatch;
import org.apache.pinot.spi.stream.PartitionLevelConsumer;
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
 * after an error) closes it and opens a new one there.
 */
public class PulsarPartitionLevelConsumer implements PartitionLevelConsumer {

  private static final Logger LOGGER = LoggerFactory.getLogger(PulsarPartitionLevelConsumer.class);

  /** At most this many messages per batch. */
  static final int MAX_MESSAGES_PER_BATCH = 5000;
  /** The reader's prefetch queue. */
  static final int RECEIVER_QUEUE_SIZE = 1000;

  private final PulsarConfig _config;
  private final String _clientId;
  private final int _partition;

  private PulsarClient _client;
  private String _partitionTopic;
  private Reader<byte[]> _reader;
  /** Where {@link #_reader} is: the offset of the next message it returns. */
  private PulsarMsgOffset _readerPosition;
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
      positionReaderAt(start);
      PulsarMsgOffset position = start;
      while (batch.getMessageCount() < MAX_MESSAGES_PER_BATCH) {
        long waitMillis = batch.getMessageCount() == 0 ? Math.max(0L, deadline - System.currentTimeMillis()) : 0L;
        Message<byte[]> message = _reader.readNext((int) Math.min(Integer.MAX_VALUE, waitMillis),
            TimeUnit.MILLISECONDS);
        if (message == null) {
          break;
        }
        PulsarMsgOffset messagePosition = PulsarMsgOffset.positionOf(message.getMessageId());
        PulsarMsgOffset next = PulsarMsgOffset.nextAfter(message.getMessageId());
        if (messagePosition.comparePosition(start) < 0) {
          // Cannot happen with an inclusive start; never hand Pinot a message before its start offset.
          LOGGER.warn("Pulsar consumer {} skips message {} before start offset {}", _clientId, messagePosition,
              start);
          position = next;
          continue;
        }
        if (end != null && messagePosition.comparePosition(end) >= 0) {
          // The reader is past this message now: the next fetch must reopen it.
          closeReader();
          break;
        }
        batch.add(message.getData(), next, message.getPublishTime());
        position = next;
      }
      if (_reader != null) {
        _readerPosition = position;
      }
    } catch (PulsarClientException e) {
      // Start over at the requested offset on the next fetch; Pinot retries transient errors.
      closeReader();
      throw new TransientConsumerException(e);
    }
    return batch;
  }

  private void positionReaderAt(PulsarMsgOffset start)
      throws PulsarClientException, TimeoutException {
    if (_reader != null && start.equals(_readerPosition)) {
      return;
    }
    if (_reader != null) {
      LOGGER.info("Pulsar consumer {}: fetch starts at {} but the reader is at {}; reopening", _clientId, start,
          _readerPosition);
      closeReader();
    }
    if (_client == null) {
      _client = _config.createClient();
    }
    if (_partitionTopic == null) {
      _partitionTopic = PartitionTopics.select(
          PartitionTopics.list(_client, _config.getTopicName(), _config.getConnectionTimeoutMillis()),
          _config.getTopicName(), _partition);
    }
    LOGGER.info("Pulsar consumer {} opens a reader on {} at {} (inclusive)", _clientId, _partitionTopic, start);
    _reader = _client.newReader()
        .topic(_partitionTopic)
        .startMessageId(start.toStartMessageId())
        .startMessageIdInclusive()
        .receiverQueueSize(RECEIVER_QUEUE_SIZE)
        .readerName(_clientId)
        .create();
    _readerPosition = start;
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
    closeReader();
    if (_client != null) {
      PulsarClients.closeInBackground(_client, "consumer " + _clientId);
      _client = null;
    }
    LOGGER.info("Pulsar consumer {} for partition {} closed", _clientId, _partition);
  }
}
