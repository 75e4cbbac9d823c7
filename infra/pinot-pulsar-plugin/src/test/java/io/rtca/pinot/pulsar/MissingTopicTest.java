package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.Map;
import java.util.UUID;
import org.apache.pinot.spi.stream.MessageBatch;
import org.apache.pinot.spi.stream.OffsetCriteria;
import org.apache.pinot.spi.stream.PermanentConsumerException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIfSystemProperty;

/**
 * Against a real broker with the default auto topic creation (e.g. the workbench's): looking at a topic that does not
 * exist (a misspelt stream.pulsar.topic.name) must not create it, and must fail for good with its name; the plain
 * look-up and the reader opened after it created it, and the table consumed the empty topic forever. Runs only when
 * given a broker:
 * {@code mvn -o test -Dpulsar.test.url=pulsar://127.0.0.1:6650 -Dpulsar.test.admin=http://127.0.0.1:8080}.
 */
@EnabledIfSystemProperty(named = "pulsar.test.url", matches = ".+")
class MissingTopicTest {

  private static final String NAMESPACE = "public/default";

  private static String unique(String name) {
    return "plugin-test-" + name + "-" + UUID.randomUUID().toString().substring(0, 8);
  }

  private static PulsarConfig config(String topic) {
    Map<String, String> map = PulsarConfigTest.tableStreamConfigs();
    map.put("stream.pulsar.bootstrap.servers", System.getProperty("pulsar.test.url"));
    map.put("stream.pulsar.topic.name", topic);
    return PulsarConfigTest.config(map);
  }

  /** The admin REST's status for {@code path} under /admin/v2/persistent/. */
  private static int admin(String method, String path, String body)
      throws Exception {
    HttpRequest request = HttpRequest.newBuilder(
            URI.create(System.getProperty("pulsar.test.admin") + "/admin/v2/persistent/" + path))
        .header("Content-Type", "application/json")
        .method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(body))
        .build();
    return HttpClient.newHttpClient().send(request, HttpResponse.BodyHandlers.discarding()).statusCode();
  }

  private static boolean exists(String name)
      throws Exception {
    // either a topic or a partitioned topic's metadata (a created partitioned topic has stats too)
    int topic = admin("GET", NAMESPACE + "/" + name + "/stats", null);
    int partitioned = admin("GET", NAMESPACE + "/" + name + "/partitioned-stats", null);
    return topic != 404 || partitioned != 404;
  }

  /** Fetches until the reader, opened in the background, fails (at most about 30 s). */
  private static PermanentConsumerException fetchUntilFailure(PulsarPartitionLevelConsumer consumer) {
    return assertThrows(PermanentConsumerException.class, () -> {
      for (int fetch = 0; fetch < 30; fetch++) {
        MessageBatch<byte[]> batch = consumer.fetchMessages(PulsarMsgOffset.EARLIEST, null, 1000);
        assertEquals(0, batch.getMessageCount());
      }
    });
  }

  @Test
  void aConsumerOfAMissingTopicFailsForGoodAndLeavesItMissing()
      throws Exception {
    String name = unique("consumer");
    String topic = "persistent://" + NAMESPACE + "/" + name;
    try (PulsarPartitionLevelConsumer consumer = new PulsarPartitionLevelConsumer(config(topic), "missing-test", 0)) {
      PermanentConsumerException e = fetchUntilFailure(consumer);
      assertTrue(e.getMessage().contains(topic) && e.getMessage().contains("does not exist"), e.getMessage());
    }
    assertFalse(exists(name), topic + " was created");
  }

  @Test
  void theMetadataOfAMissingTopicFailsAndLeavesItMissing()
      throws Exception {
    String name = unique("metadata");
    String topic = "persistent://" + NAMESPACE + "/" + name;
    try (PulsarStreamMetadataProvider stream = new PulsarStreamMetadataProvider(config(topic), "missing-test",
        PulsarStreamMetadataProvider.WHOLE_STREAM);
        PulsarStreamMetadataProvider partition = new PulsarStreamMetadataProvider(config(topic), "missing-test", 0)) {
      RuntimeException e = assertThrows(PermanentConsumerException.class, () -> stream.fetchPartitionCount(30_000));
      assertTrue(e.getMessage().contains(topic + " does not exist"), e.getMessage());
      e = assertThrows(PermanentConsumerException.class,
          () -> partition.fetchStreamPartitionOffset(OffsetCriteria.LARGEST_OFFSET_CRITERIA, 30_000));
      assertTrue(e.getMessage().contains(topic + " does not exist"), e.getMessage());
    }
    assertFalse(exists(name), topic + " was created");
  }

  @Test
  void aMissingNamespaceIsPermanentToo()
      throws Exception {
    String topic = "persistent://public/" + unique("namespace") + "/trades";
    try (PulsarPartitionLevelConsumer consumer = new PulsarPartitionLevelConsumer(config(topic), "missing-test", 0)) {
      PermanentConsumerException e = fetchUntilFailure(consumer);
      assertTrue(e.getMessage().contains(topic), e.getMessage());
    }
  }

  @Test
  void existingTopicsAreStillFound()
      throws Exception {
    String single = unique("single");
    String partitioned = unique("partitioned");
    assertEquals(204, admin("PUT", NAMESPACE + "/" + single, null));
    assertEquals(204, admin("PUT", NAMESPACE + "/" + partitioned + "/partitions", "3"));
    String singleTopic = "persistent://" + NAMESPACE + "/" + single;
    String partitionedTopic = "persistent://" + NAMESPACE + "/" + partitioned;
    int whole = PulsarStreamMetadataProvider.WHOLE_STREAM;
    try (PulsarStreamMetadataProvider singleStream = new PulsarStreamMetadataProvider(config(singleTopic), "t", whole);
        PulsarStreamMetadataProvider partitionedStream =
            new PulsarStreamMetadataProvider(config(partitionedTopic), "t", whole);
        PulsarStreamMetadataProvider partition = new PulsarStreamMetadataProvider(config(partitionedTopic), "t", 2)) {
      assertEquals(1, singleStream.fetchPartitionCount(30_000));
      assertEquals(3, partitionedStream.fetchPartitionCount(30_000));
      partition.fetchStreamPartitionOffset(OffsetCriteria.LARGEST_OFFSET_CRITERIA, 30_000);
    } finally {
      admin("DELETE", NAMESPACE + "/" + single + "?force=true", null);
      admin("DELETE", NAMESPACE + "/" + partitioned + "/partitions?force=true", null);
    }
  }
}
