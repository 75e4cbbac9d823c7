package io.rtca.pinot.pulsar;

import java.io.IOException;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.pinot.spi.stream.OffsetCriteria;
import org.apache.pinot.spi.stream.PermanentConsumerException;
import org.apache.pinot.spi.stream.StreamMetadataProvider;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffset;
import org.apache.pinot.spi.stream.TransientConsumerException;
import org.apache.pulsar.client.api.MessageId;
import org.apache.pulsar.client.api.PulsarClient;
import org.apache.pulsar.client.api.PulsarClientException;
import org.apache.pulsar.client.api.Reader;
import org.apache.pulsar.client.api.TopicMessageId;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Partition count of a topic, and the smallest / largest offset of one partition. The client is created on first
 * use (Pinot creates providers it may never call) and closed by {@link #close()}.
 */
public class PulsarStreamMetadataProvider implements StreamMetadataProvider {

  private static final Logger LOGGER = LoggerFactory.getLogger(PulsarStreamMetadataProvider.class);

  /** Partition of a provider for the whole stream, which answers only the partition count. */
  static final int WHOLE_STREAM = -1;

  private final PulsarConfig _config;
  private final String _clientId;
  private final int _partition;

  private PulsarClient _client;
  private boolean _closed;

  /** A provider for the whole stream ({@code partition} -1) or for one partition. */
  public PulsarStreamMetadataProvider(PulsarConfig config, String clientId, int partition) {
    _config = config;
    _clientId = clientId;
    _partition = partition;
  }

  private synchronized PulsarClient client() {
    if (_closed) {
      throw new IllegalStateException("Pulsar metadata provider " + _clientId + " is closed");
    }
    if (_client == null) {
      try {
        _client = _config.createClient();
      } catch (PulsarClientException e) {
        throw new TransientConsumerException(e);
      }
    }
    return _client;
  }

  /**
   * 1 for a non-partitioned topic, else the number of partitions. Pinot's controller retries only a
   * {@link TransientConsumerException} from here (and fails at once on anything else): a look-up that timed out is one.
   */
  @Override
  public int fetchPartitionCount(long timeoutMillis) {
    try {
      return PartitionTopics.list(client(), _config.getTopicName(), timeoutMillis).size();
    } catch (TimeoutException e) {
      throw new TransientConsumerException(e);
    }
  }

  /**
   * {@code smallest}: the beginning of the topic ({@code -1:-1:-1:-1}). {@code largest}: the position right after
   * the partition's last message, so that only messages published from now on are read.
   */
  @Override
  public StreamPartitionMsgOffset fetchStreamPartitionOffset(OffsetCriteria offsetCriteria, long timeoutMillis)
      throws TimeoutException {
    if (offsetCriteria == null) {
      throw new IllegalArgumentException("Offset criteria must not be null");
    }
    if (offsetCriteria.isSmallest()) {
      return PulsarMsgOffset.EARLIEST;
    }
    if (!offsetCriteria.isLargest()) {
      throw new IllegalArgumentException(
          "Unsupported offset criteria for Pulsar: " + offsetCriteria + " (use smallest or largest)");
    }
    if (_partition == WHOLE_STREAM) {
      throw new UnsupportedOperationException(
          "The largest offset is per partition: use a partition metadata provider");
    }
    // Each step (partition look-up, reader creation, last-id request) gets the whole timeout: the first call in a JVM
    // also loads the client's classes and connects, which alone can take seconds. The reader comes only after the
    // look-up found the topic: on a missing topic it would create it.
    long stepTimeoutMillis = Math.max(1L, timeoutMillis);
    PulsarClient client = client();
    String topic = PartitionTopics.select(PartitionTopics.list(client, _config.getTopicName(), timeoutMillis),
        _config.getTopicName(), _partition);
    CompletableFuture<Reader<byte[]>> readerFuture = client.newReader().topic(topic)
        .startMessageId(MessageId.latest).receiverQueueSize(1).readerName(_clientId + "-offsets").createAsync();
    Reader<byte[]> reader = null;
    try {
      try {
        reader = readerFuture.get(stepTimeoutMillis, TimeUnit.MILLISECONDS);
      } catch (TimeoutException e) {
        // Close it if it comes after all.
        readerFuture.thenAccept(Reader::closeAsync);
        throw e;
      }
      List<TopicMessageId> lastIds = reader.getLastMessageIdsAsync()
          .get(stepTimeoutMillis, TimeUnit.MILLISECONDS);
      if (lastIds.size() != 1) {
        throw new IllegalStateException("Expected one last message id for " + topic + ", got " + lastIds);
      }
      PulsarMsgOffset largest = PulsarMsgOffset.afterLastMessage(lastIds.get(0));
      LOGGER.info("Pulsar {}: last message {}, largest offset {}", topic, lastIds.get(0), largest);
      return largest;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("Interrupted while fetching the largest offset of " + topic, e);
    } catch (ExecutionException e) {
      Throwable cause = PartitionTopics.unwrap(e);
      throw PulsarPartitionLevelConsumer.isPermanent(cause) ? new PermanentConsumerException(cause)
          : new TransientConsumerException(cause);
    } finally {
      if (reader != null) {
        try {
          reader.close();
        } catch (IOException e) {
          LOGGER.warn("Error closing the offset reader on {}", topic, e);
        }
      }
    }
  }

  @Override
  public synchronized void close()
      throws IOException {
    if (_closed) {
      return;
    }
    _closed = true;
    if (_client != null) {
      PulsarClients.closeInBackground(_client, "metadata provider " + _clientId);
      _client = null;
    }
  }
}
