package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.pinot.spi.stream.OffsetCriteria;
import org.apache.pinot.spi.stream.PartitionLevelConsumer;
import org.apache.pinot.spi.stream.StreamConfig;
import org.apache.pinot.spi.stream.StreamConsumerFactory;
import org.apache.pinot.spi.stream.StreamConsumerFactoryProvider;
import org.apache.pinot.spi.stream.StreamMetadataProvider;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffsetFactory;
import org.junit.jupiter.api.Test;

/** The factory as Pinot creates it (by class name from the stream config); nothing here connects to Pulsar. */
class PulsarConsumerFactoryTest {

  private static StreamConsumerFactory factory(Map<String, String> map) {
    return StreamConsumerFactoryProvider.create(new StreamConfig("trades_REALTIME", map));
  }

  @Test
  void pinotCreatesOurFactoryFromTheStreamConfig() {
    StreamConsumerFactory factory = factory(PulsarConfigTest.tableStreamConfigs());
    assertTrue(factory instanceof PulsarConsumerFactory);
    StreamPartitionMsgOffsetFactory offsets = factory.createStreamMsgOffsetFactory();
    assertTrue(offsets instanceof PulsarMsgOffsetFactory);
    assertEquals(new PulsarMsgOffset(4, 5, 0, -1), offsets.create("4:5:0:-1"));
  }

  @Test
  void streamLevelConsumptionIsRefused() {
    StreamConsumerFactory factory = factory(PulsarConfigTest.tableStreamConfigs());
    UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
        () -> factory.createStreamLevelConsumer("c", "trades_REALTIME", Set.of(), "g"));
    assertTrue(e.getMessage().contains("lowlevel"), e.getMessage());
  }

  @Test
  void missingServiceUrlFailsWhenAConsumerIsCreated() {
    Map<String, String> map = PulsarConfigTest.tableStreamConfigs();
    map.remove("stream.pulsar.bootstrap.servers");
    StreamConsumerFactory factory = factory(map);
    assertThrows(IllegalArgumentException.class, () -> factory.createPartitionLevelConsumer("c", 0));
    assertThrows(IllegalArgumentException.class, () -> factory.createStreamMetadataProvider("c"));
    // The offset factory needs no connection settings (the controller uses it at segment commit).
    assertTrue(factory.createStreamMsgOffsetFactory() instanceof PulsarMsgOffsetFactory);
  }

  @Test
  void smallestNeedsNoBroker()
      throws Exception {
    // Nothing listens on this port: smallest must not connect.
    Map<String, String> map = PulsarConfigTest.tableStreamConfigs();
    map.put("stream.pulsar.bootstrap.servers", "pulsar://127.0.0.1:1");
    try (StreamMetadataProvider provider = factory(map).createPartitionMetadataProvider("c", 0)) {
      assertSame(PulsarMsgOffset.EARLIEST, provider.fetchStreamPartitionOffset(OffsetCriteria.SMALLEST_OFFSET_CRITERIA,
          1000));
    }
  }

  @Test
  void numericFetchIsRefusedAndCloseIsIdempotent()
      throws Exception {
    PartitionLevelConsumer consumer = factory(PulsarConfigTest.tableStreamConfigs()).createPartitionLevelConsumer("c", 0);
    assertThrows(UnsupportedOperationException.class, () -> consumer.fetchMessages(0L, 10L, 100));
    consumer.close();
    consumer.close();
    assertThrows(IllegalStateException.class,
        () -> consumer.fetchMessages(PulsarMsgOffset.EARLIEST, null, 100));
  }

  @Test
  void partitionTopicSelection() {
    List<String> partitioned = List.of("persistent://public/default/t-partition-10",
        "persistent://public/default/t-partition-1", "persistent://public/default/t-partition-0");
    assertEquals("persistent://public/default/t-partition-1", PartitionTopics.select(partitioned, "t", 1));
    assertEquals("persistent://public/default/t-partition-10", PartitionTopics.select(partitioned, "t", 10));
    assertEquals("persistent://public/default/t-partition-0", PartitionTopics.select(partitioned, "t", 0));
    assertThrows(IllegalArgumentException.class, () -> PartitionTopics.select(partitioned, "t", 2));

    List<String> single = List.of("persistent://public/default/t");
    assertEquals("persistent://public/default/t", PartitionTopics.select(single, "t", 0));
    assertThrows(IllegalArgumentException.class, () -> PartitionTopics.select(single, "t", 1));
  }
}
