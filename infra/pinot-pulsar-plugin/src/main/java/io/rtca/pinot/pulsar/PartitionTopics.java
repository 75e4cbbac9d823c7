package io.rtca.pinot.pulsar;

import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.pulsar.client.api.PulsarClient;

/** Maps Pinot's partition numbers onto Pulsar topics: a non-partitioned topic is partition 0. */
final class PartitionTopics {

  private PartitionTopics() {
  }

  /** The topics that make up {@code topic}: itself if not partitioned, else its {@code -partition-N} topics. */
  static List<String> list(PulsarClient client, String topic, long timeoutMillis)
      throws TimeoutException {
    try {
      return client.getPartitionsForTopic(topic).get(Math.max(1L, timeoutMillis), TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("Interrupted while looking up the partitions of Pulsar topic " + topic, e);
    } catch (ExecutionException e) {
      throw new IllegalStateException("Cannot look up the partitions of Pulsar topic " + topic + ": "
          + e.getCause(), e.getCause());
    }
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
