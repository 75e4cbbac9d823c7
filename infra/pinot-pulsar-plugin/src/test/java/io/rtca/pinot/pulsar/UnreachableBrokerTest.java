package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.ServerSocket;
import java.util.Map;
import org.apache.pinot.spi.stream.MessageBatch;
import org.apache.pinot.spi.stream.TransientConsumerException;
import org.junit.jupiter.api.Test;

/**
 * While the broker cannot be reached (restarting), a fetch returns an empty batch within its timeout: opening the
 * reader synchronously waited the client's 30-s operation timeout, blocking Pinot's consumer thread and a server
 * stop, and five failed fetches in a row put the consuming segment in ERROR for good.
 */
class UnreachableBrokerTest {

  private static int closedPort()
      throws Exception {
    try (ServerSocket probe = new ServerSocket(0)) {
      return probe.getLocalPort(); // closed again: nothing listens there
    }
  }

  @Test
  void fetchesWhileTheBrokerIsDownAreEmptyAndKeepToTheirTimeout()
      throws Exception {
    int port = closedPort();
    Map<String, String> map = PulsarConfigTest.tableStreamConfigs();
    map.put("stream.pulsar.bootstrap.servers", "pulsar://127.0.0.1:" + port);
    PulsarPartitionLevelConsumer consumer =
        new PulsarPartitionLevelConsumer(PulsarConfigTest.config(map), "unreachable-test", 0);
    PulsarMsgOffset start = new PulsarMsgOffset(-1, -1, -1, -1);
    long longest = 0;
    for (int fetch = 0; fetch < 4; fetch++) {
      long began = System.nanoTime();
      MessageBatch<byte[]> batch = consumer.fetchMessages(start, null, 300);
      longest = Math.max(longest, (System.nanoTime() - began) / 1_000_000);
      assertEquals(0, batch.getMessageCount());
    }
    long began = System.nanoTime();
    consumer.close();
    long closing = (System.nanoTime() - began) / 1_000_000;
    // generous bounds (a loaded machine), far under the 30 s a synchronous open took
    assertTrue(longest < 10_000, "a fetch took " + longest + " ms");
    assertTrue(closing < 10_000, "closing took " + closing + " ms");
  }

  /** The controller retries only a TransientConsumerException: any other failed a table's creation at once. */
  @Test
  void thePartitionCountOfAnUnreachableBrokerIsTransient()
      throws Exception {
    Map<String, String> map = PulsarConfigTest.tableStreamConfigs();
    map.put("stream.pulsar.bootstrap.servers", "pulsar://127.0.0.1:" + closedPort());
    try (PulsarStreamMetadataProvider provider = new PulsarStreamMetadataProvider(PulsarConfigTest.config(map),
        "unreachable-test", PulsarStreamMetadataProvider.WHOLE_STREAM)) {
      assertThrows(TransientConsumerException.class, () -> provider.fetchPartitionCount(1000));
    }
  }
}
