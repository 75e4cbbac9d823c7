package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.pinot.spi.stream.StreamConfig;
import org.apache.pulsar.client.api.PulsarClient;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PulsarConfigTest {

  /** The stream configs of a table as the project writes them. */
  static Map<String, String> tableStreamConfigs() {
    Map<String, String> map = new HashMap<>();
    map.put("streamType", "pulsar");
    map.put("stream.pulsar.topic.name", "persistent://public/default/trades");
    map.put("stream.pulsar.bootstrap.servers", "pulsar://127.0.0.1:6650");
    map.put("stream.pulsar.consumer.type", "lowlevel");
    map.put("stream.pulsar.consumer.factory.class.name", "io.rtca.pinot.pulsar.PulsarConsumerFactory");
    map.put("stream.pulsar.decoder.class.name", "org.apache.pinot.plugin.inputformat.json.JSONMessageDecoder");
    map.put("stream.pulsar.consumer.prop.auto.offset.reset", "smallest");
    map.put("realtime.segment.flush.threshold.rows", "5000");
    return map;
  }

  static PulsarConfig config(Map<String, String> map) {
    return new PulsarConfig(new StreamConfig("trades_REALTIME", map));
  }

  @Test
  void readsTheTableStreamConfigs() {
    PulsarConfig config = config(tableStreamConfigs());
    assertEquals("pulsar", config.getStreamType());
    assertEquals("persistent://public/default/trades", config.getTopicName());
    assertEquals("pulsar://127.0.0.1:6650", config.getServiceUrl());
    assertTrue(config.getOffsetCriteria().isSmallest());
    assertNull(config.getAuthenticationToken());
    assertNull(config.getTlsTrustCertsFilePath());
  }

  @Test
  void largestAndDefaultOffsetCriteria() {
    Map<String, String> map = tableStreamConfigs();
    map.put("stream.pulsar.consumer.prop.auto.offset.reset", "largest");
    assertTrue(config(map).getOffsetCriteria().isLargest());
    map.remove("stream.pulsar.consumer.prop.auto.offset.reset");
    // Pinot's default is largest.
    assertTrue(config(map).getOffsetCriteria().isLargest());
  }

  @Test
  void otherOffsetCriteriaAreRejectedClearly() {
    Map<String, String> map = tableStreamConfigs();
    map.put("stream.pulsar.consumer.prop.auto.offset.reset", "2d");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> config(map));
    assertTrue(e.getMessage().contains("stream.pulsar.consumer.prop.auto.offset.reset"), e.getMessage());
    assertTrue(e.getMessage().contains("smallest or largest"), e.getMessage());
  }

  @Test
  void missingServiceUrlNamesTheKey() {
    Map<String, String> map = tableStreamConfigs();
    map.remove("stream.pulsar.bootstrap.servers");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> config(map));
    assertTrue(e.getMessage().contains("Missing Pulsar stream config 'stream.pulsar.bootstrap.servers'"),
        e.getMessage());
    map.put("stream.pulsar.bootstrap.servers", "   ");
    assertThrows(IllegalArgumentException.class, () -> config(map));
  }

  @Test
  void serviceUrlMustBeAPulsarUrl() {
    Map<String, String> map = tableStreamConfigs();
    map.put("stream.pulsar.bootstrap.servers", "127.0.0.1:6650");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> config(map));
    assertTrue(e.getMessage().contains("pulsar://"), e.getMessage());
    map.put("stream.pulsar.bootstrap.servers", " pulsar+ssl://broker.example:6651 ");
    assertEquals("pulsar+ssl://broker.example:6651", config(map).getServiceUrl());
  }

  @Test
  void blankTopicNamesTheKey() {
    Map<String, String> map = tableStreamConfigs();
    map.put("stream.pulsar.topic.name", " ");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> config(map));
    assertTrue(e.getMessage().contains("stream.pulsar.topic.name"), e.getMessage());
  }

  @Test
  void keysFollowTheStreamType() {
    Map<String, String> map = tableStreamConfigs();
    map.put("streamType", "pulsar2");
    map.put("stream.pulsar2.topic.name", "t");
    map.put("stream.pulsar2.consumer.type", "lowlevel");
    map.put("stream.pulsar2.decoder.class.name", "x");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> config(map));
    assertTrue(e.getMessage().contains("stream.pulsar2.bootstrap.servers"), e.getMessage());
  }

  @Test
  void optionalTokenAndTrustCerts(@TempDir Path dir)
      throws Exception {
    Path ca = dir.resolve("ca.pem");
    Files.writeString(ca, "not checked here");
    Map<String, String> map = tableStreamConfigs();
    map.put("stream.pulsar.authenticationToken", "eyJhbGciOiJIUzI1NiJ9.e30.sig");
    map.put("stream.pulsar.tlsTrustCertsFilePath", ca.toString());
    PulsarConfig config = config(map);
    assertEquals("eyJhbGciOiJIUzI1NiJ9.e30.sig", config.getAuthenticationToken());
    assertEquals(ca.toString(), config.getTlsTrustCertsFilePath());
    assertFalse(config.toString().contains("eyJ"), "the token must not be logged");
  }

  @Test
  void missingTrustCertsFileIsReportedBeforeConnecting(@TempDir Path dir) {
    Map<String, String> map = tableStreamConfigs();
    map.put("stream.pulsar.tlsTrustCertsFilePath", new File(dir.toFile(), "absent.pem").getPath());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> config(map).createClient());
    assertTrue(e.getMessage().contains("stream.pulsar.tlsTrustCertsFilePath"), e.getMessage());
  }

  /**
   * Building and closing a client does not need a broker; closing in the background (as consumers and providers do)
   * must not leave Pulsar threads behind.
   */
  @Test
  void clientClosesItsThreads()
      throws Exception {
    PulsarConfig config = config(tableStreamConfigs());
    for (int i = 0; i < 3; i++) {
      PulsarClient client = config.createClient();
      assertFalse(pulsarThreads().isEmpty(), "a client has its own threads");
      PulsarClients.closeInBackground(client, "test");
    }
    long deadline = System.currentTimeMillis() + 10_000;
    List<String> left;
    do {
      left = pulsarThreads();
      if (left.isEmpty()) {
        break;
      }
      Thread.sleep(100);
    } while (System.currentTimeMillis() < deadline);
    assertEquals(List.of(), left);
  }

  static List<String> pulsarThreads() {
    return Thread.getAllStackTraces().keySet().stream().filter(Thread::isAlive).map(Thread::getName)
        .filter(n -> n.startsWith("pulsar-")).sorted().collect(java.util.stream.Collectors.toList());
  }
}
