package io.rtca.pinot.pulsar;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.pinot.spi.stream.PermanentConsumerException;
import org.apache.pinot.spi.stream.TransientConsumerException;
import org.apache.pulsar.client.api.PulsarClient;
import org.apache.pulsar.client.api.PulsarClientException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Maps Pinot's partition numbers onto Pulsar topics: a non-partitioned topic is partition 0. */
final class PartitionTopics {

  private static final Logger LOGGER = LoggerFactory.getLogger(PartitionTopics.class);

  private PartitionTopics() {
  }

  /**
   * The topics that make up {@code topic}: itself if not partitioned, else its {@code -partition-N} topics. The
   * look-up never creates the topic (PIP-344): with the broker's default auto topic creation, the plain look-up let a
   * misspelt topic name pass as an empty non-partitioned topic (or created its partitioned metadata), and the reader
   * opened on it then created the topic, so a table consumed nothing forever instead of failing. A topic that does
   * not exist fails with a {@link PulsarClientException.TopicDoesNotExistException} naming it. Only a broker older
   * than 3.3, which cannot look up without creating, gets the plain look-up (with a warning).
   */
  static CompletableFuture<List<String>> lookUp(PulsarClient client, String topic) {
    return client.getPartitionsForTopic(topic, false)
        .handle((names, error) -> {
          if (error != null && cannotLookUpWithoutCreating(unwrap(error))) {
            LOGGER.warn("The Pulsar broker cannot look up topic {} without creating it (a broker before 3.3): "
                + "a misspelt topic name is created instead of refused", topic);
            return client.getPartitionsForTopic(topic);
          }
          return error == null ? CompletableFuture.completedFuture(names)
              : CompletableFuture.<List<String>>failedFuture(unwrap(error));
        })
        .thenCompose(future -> future)
        .handle((names, error) -> {
          if (error == null) {
            return names;
          }
          Throwable cause = unwrap(error);
          throw new CompletionException(cause instanceof PulsarClientException.TopicDoesNotExistException
              || cause instanceof PulsarClientException.NotFoundException ? doesNotExist(topic, cause) : cause);
        });
  }

  private static boolean cannotLookUpWithoutCreating(Throwable error) {
    return error instanceof PulsarClientException.FeatureNotSupportedException
        && ((PulsarClientException.FeatureNotSupportedException) error).getFailedFeatureCheck()
        == PulsarClientException.FailedFeatureCheck.SupportsGetPartitionedMetadataWithoutAutoCreation;
  }

  /**
   * {@link #lookUp}, waiting up to {@code timeoutMillis}. An error no retry fixes (see
   * {@link PulsarPartitionLevelConsumer#isPermanent}) is a {@link PermanentConsumerException}; any other (a broker
   * briefly unreachable, a look-up timeout, too many requests, a broker not ready) a
   * {@link TransientConsumerException}, which Pinot retries; the wait running out a {@link TimeoutException}.
   */
  static List<String> list(PulsarClient client, String topic, long timeoutMillis)
      throws TimeoutException {
    try {
      return lookUp(client, topic).get(Math.max(1L, timeoutMillis), TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("Interrupted while looking up the partitions of Pulsar topic " + topic, e);
    } catch (ExecutionException e) {
      throw classify(unwrap(e), topic);
    }
  }

  /**
   * The error for a topic the broker does not know (its own message is empty): it names the topic and where it comes
   * from. A {@link PulsarClientException.TopicDoesNotExistException}, so that it is permanent wherever it surfaces.
   */
  static PulsarClientException doesNotExist(String topic, Throwable cause) {
    PulsarClientException error = new PulsarClientException.TopicDoesNotExistException("Pulsar topic " + topic
        + " does not exist (or its namespace does not): check the table's stream.pulsar.topic.name; the plugin "
        + "does not create topics");
    error.initCause(cause);
    return error;
  }

  /**
   * What Pinot gets for {@code error}, a failed look-up of {@code topic}: permanent if no retry fixes it, else
   * transient. The controller retries a partition count only on a transient error (an IllegalStateException, as every
   * error was, failed a table's creation or a segment commit at once while a broker restarted).
   */
  static RuntimeException classify(Throwable error, String topic) {
    // doesNotExist's error names the topic already; the client's own errors mostly do not
    Throwable named = String.valueOf(error.getMessage()).contains(topic) ? error
        : new IllegalStateException("Cannot look up the partitions of Pulsar topic " + topic + ": " + error, error);
    if (PulsarPartitionLevelConsumer.isPermanent(error)) {
      return new PermanentConsumerException(named);
    }
    return new TransientConsumerException(named);
  }

  /** The error inside the wrappers a future adds. */
  static Throwable unwrap(Throwable error) {
    Throwable cause = error;
    while ((cause instanceof CompletionException || cause instanceof ExecutionException) && cause.getCause() != null) {
      cause = cause.getCause();
    }
    return cause;
  }

  /** The topic to read for Pinot partition {@code partition}, given the answer of {@link #list}. */
  static String select(List<String> partitionTopics, String topic, int partition) {
    String suffix = "-partition-" + partition;
    for (String name : partitionTopics) {
      if (name.endsWith(suffix)) {
        return name;
      }
    }
    if (partition == 0 && partitionTopics.size() == 1) {
      return partitionTopics.get(0);
    }
    throw new IllegalArgumentException(
        "Pulsar topic " + topic + " has no partition " + partition + " (it has " + partitionTopics.size() + ")");
  }
}
