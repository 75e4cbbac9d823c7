package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Proxy;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.List;
import org.apache.pulsar.client.api.Message;
import org.apache.pulsar.client.api.MessageId;
import org.apache.pulsar.client.api.PulsarClientException;
import org.apache.pulsar.client.impl.BatchMessageIdImpl;
import org.junit.jupiter.api.Test;

/**
 * After a reconnect the Pulsar client hands an inclusive reader the last message it delivered again (seen on the
 * running stack in the middle of a fetch): {@link PulsarPartitionLevelConsumer#fill} must drop every message before
 * what it already covers, not only one before the fetch's start offset.
 */
class FillTest {

  /** Message {@code index} of a batch of 10 in entry 7 of ledger 5; its payload is its index. */
  private static Message<byte[]> message(int index) {
    return message(index, Integer.toString(index).getBytes(StandardCharsets.UTF_8));
  }

  @SuppressWarnings("unchecked")
  private static Message<byte[]> message(int index, byte[] data) {
    MessageId id = new BatchMessageIdImpl(5, 7, -1, index, 10, null);
    return (Message<byte[]>) Proxy.newProxyInstance(FillTest.class.getClassLoader(), new Class<?>[]{Message.class},
        (proxy, method, args) -> {
          switch (method.getName()) {
            case "getMessageId":
              return id;
            case "getData":
              return data;
            case "getPublishTime":
              return 1_700_000_000_000L + index;
            default:
              throw new UnsupportedOperationException(method.getName());
          }
        });
  }

  private static PulsarPartitionLevelConsumer.MessageSource source(Integer... indexes) {
    Deque<Message<byte[]>> queue = new ArrayDeque<>();
    for (int index : indexes) {
      queue.add(message(index));
    }
    return waitMillis -> queue.poll();
  }

  private static List<String> payloads(PulsarMessageBatch batch) {
    List<String> out = new ArrayList<>();
    for (int i = 0; i < batch.getMessageCount(); i++) {
      out.add(new String(batch.getMessageAtIndex(i), StandardCharsets.UTF_8));
    }
    return out;
  }

  @Test
  void aMessageHandedAgainInTheMiddleOfAFetchIsDropped()
      throws PulsarClientException {
    PulsarMsgOffset start = new PulsarMsgOffset(5, 7, -1, 2);
    PulsarMessageBatch batch = new PulsarMessageBatch(start);
    PulsarPartitionLevelConsumer.Filled filled =
        PulsarPartitionLevelConsumer.fill(batch, source(1, 2, 3, 4, 4, 3, 5), start, null, 0L);
    assertEquals(Arrays.asList("2", "3", "4", "5"), payloads(batch));
    assertEquals(3, filled._dropped);
    assertEquals(new PulsarMsgOffset(5, 7, -1, 6), filled._position);
    assertFalse(filled._pastEnd);
  }

  @Test
  void aMessageWithoutAValueIsAnEmptyPayloadNotANullThatStopsTheTable()
      throws PulsarClientException {
    PulsarMsgOffset start = new PulsarMsgOffset(5, 7, -1, 0);
    PulsarMessageBatch batch = new PulsarMessageBatch(start);
    Deque<Message<byte[]>> queue = new ArrayDeque<>(Arrays.asList(message(0), message(1, null), message(2)));
    PulsarPartitionLevelConsumer.Filled filled =
        PulsarPartitionLevelConsumer.fill(batch, waitMillis -> queue.poll(), start, null, 0L);
    assertEquals(Arrays.asList("0", "", "2"), payloads(batch));
    assertEquals(0, batch.getMessageLengthAtIndex(1));
    assertEquals(new PulsarMsgOffset(5, 7, -1, 3), filled._position);
  }

  @Test
  void theEndOffsetIsExclusiveAndLeavesTheSourcePastIt()
      throws PulsarClientException {
    PulsarMsgOffset start = new PulsarMsgOffset(5, 7, -1, 0);
    PulsarMessageBatch batch = new PulsarMessageBatch(start);
    PulsarPartitionLevelConsumer.Filled filled = PulsarPartitionLevelConsumer.fill(batch, source(0, 1, 1, 2, 3),
        start, new PulsarMsgOffset(5, 7, -1, 2), 0L);
    assertEquals(Arrays.asList("0", "1"), payloads(batch));
    assertTrue(filled._pastEnd);
    assertEquals(new PulsarMsgOffset(5, 7, -1, 2), filled._position);
  }

  @Test
  void errorsNoRetryFixesArePermanent() {
    assertTrue(PulsarPartitionLevelConsumer.isPermanent(new IllegalStateException("lookup failed",
        new PulsarClientException.TopicDoesNotExistException("Namespace not found"))));
    assertTrue(PulsarPartitionLevelConsumer.isPermanent(new PulsarClientException.AuthenticationException("no")));
    assertFalse(PulsarPartitionLevelConsumer.isPermanent(new PulsarClientException.TimeoutException("slow")));
    assertFalse(PulsarPartitionLevelConsumer.isPermanent(new IllegalStateException("interrupted")));
  }
}
