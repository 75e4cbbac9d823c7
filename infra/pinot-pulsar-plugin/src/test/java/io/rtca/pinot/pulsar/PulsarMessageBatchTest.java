package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class PulsarMessageBatchTest {

  private static final PulsarMsgOffset START = new PulsarMsgOffset(3, 10, -1, -1);

  @Test
  void emptyBatchContinuesAtItsStartOffset() {
    PulsarMessageBatch batch = new PulsarMessageBatch(START);
    assertEquals(0, batch.getMessageCount());
    assertEquals(0, batch.getUnfilteredMessageCount());
    assertSame(START, batch.getOffsetOfNextBatch());
    assertEquals(PulsarMsgOffset.EARLIEST, new PulsarMessageBatch(PulsarMsgOffset.EARLIEST).getOffsetOfNextBatch());
  }

  @Test
  void carriesPayloadsOffsetsAndPublishTimes() {
    PulsarMessageBatch batch = new PulsarMessageBatch(START);
    byte[] first = "{\"p\":1}".getBytes(StandardCharsets.UTF_8);
    byte[] second = "{\"price\":2.5}".getBytes(StandardCharsets.UTF_8);
    batch.add(first, new PulsarMsgOffset(3, 11, -1, -1), 1_700_000_000_123L);
    batch.add(second, new PulsarMsgOffset(3, 12, -1, -1), 1_700_000_000_456L);

    assertEquals(2, batch.getMessageCount());
    assertArrayEquals(second, batch.getMessageAtIndex(1));
    assertEquals(0, batch.getMessageOffsetAtIndex(1));
    assertEquals(second.length, batch.getMessageLengthAtIndex(1));
    assertEquals(first.length, batch.getMessageLengthAtIndex(0));
    assertEquals(new PulsarMsgOffset(3, 11, -1, -1), batch.getNextStreamPartitionMsgOffsetAtIndex(0));
    assertEquals(new PulsarMsgOffset(3, 12, -1, -1), batch.getNextStreamPartitionMsgOffsetAtIndex(1));
    assertEquals(new PulsarMsgOffset(3, 12, -1, -1), batch.getOffsetOfNextBatch());
    assertEquals(1_700_000_000_123L, batch.getMetadataAtIndex(0).getIngestionTimeMs());
    assertEquals(1_700_000_000_456L, batch.getMetadataAtIndex(1).getIngestionTimeMs());
  }

  @Test
  void invalidIndexAndNumericOffsetsAreRejected() {
    PulsarMessageBatch batch = new PulsarMessageBatch(START);
    batch.add(new byte[] {1}, new PulsarMsgOffset(3, 11, -1, -1), 1L);
    assertThrows(IndexOutOfBoundsException.class, () -> batch.getMessageAtIndex(1));
    assertThrows(IndexOutOfBoundsException.class, () -> batch.getNextStreamPartitionMsgOffsetAtIndex(-1));
    assertThrows(UnsupportedOperationException.class, () -> batch.getNextStreamMessageOffsetAtIndex(0));
  }
}
