package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.apache.pinot.spi.stream.LongMsgOffset;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffset;
import org.apache.pulsar.client.api.MessageId;
import org.apache.pulsar.client.api.MessageIdAdv;
import org.apache.pulsar.client.impl.BatchMessageIdImpl;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class PulsarMsgOffsetTest {

  @Test
  void serialisesAsFourColonSeparatedFields() {
    assertEquals("123:45:2:7", new PulsarMsgOffset(123L, 45L, 2, 7).toString());
    assertEquals("-1:-1:-1:-1", PulsarMsgOffset.EARLIEST.toString());
    assertEquals("9876543210123:0:-1:-1", new PulsarMsgOffset(9876543210123L, 0L, -1, -1).toString());
  }

  @ParameterizedTest
  @ValueSource(strings = {"-1:-1:-1:-1", "0:0:0:0", "17:3:-1:-1", "17:3:0:4", "9223372036854775807:42:15:999"})
  void parseAndToStringRoundTrip(String text) {
    PulsarMsgOffset offset = PulsarMsgOffset.parse(text);
    assertEquals(text, offset.toString());
    assertEquals(offset, PulsarMsgOffset.parse(offset.toString()));
    assertEquals(offset, new PulsarMsgOffsetFactory().create(text));
    assertEquals(offset, offset.fromString(text));
  }

  @Test
  void parseReadsEachField() {
    PulsarMsgOffset offset = PulsarMsgOffset.parse(" 31:7:3:12 ");
    assertEquals(31L, offset.getLedgerId());
    assertEquals(7L, offset.getEntryId());
    assertEquals(3, offset.getPartitionIndex());
    assertEquals(12, offset.getBatchIndex());
    assertTrue(PulsarMsgOffset.parse("-1:-1:-1:-1").isEarliest());
    assertEquals(PulsarMsgOffset.EARLIEST, PulsarMsgOffset.parse("-1:-1:-1:-1"));
    assertFalse(offset.isEarliest());
  }

  @ParameterizedTest
  @ValueSource(strings = {"", "1:2:3", "1:2:3:4:5", "a:2:3:4", "1:2:3:", "1::3:4", "12345", "1:2:99999999999:0",
      "1.5:2:3:4"})
  void parseRejectsMalformedText(String text) {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PulsarMsgOffset.parse(text));
    assertTrue(e.getMessage().contains("ledgerId:entryId:partitionIndex:batchIndex"), e.getMessage());
  }

  @Test
  void parseRejectsNullAndForeignOffsets() {
    assertThrows(IllegalArgumentException.class, () -> PulsarMsgOffset.parse(null));
    // A Kafka-style number is not a Pulsar offset.
    assertThrows(IllegalArgumentException.class, () -> PulsarMsgOffset.of(new LongMsgOffset(42L)));
    assertThrows(IllegalArgumentException.class, () -> new PulsarMsgOffset(1, 2, 3, 4).compareTo(new LongMsgOffset(1)));
  }

  @Test
  void ofAcceptsAnyOffsetWithOurTextForm() {
    StreamPartitionMsgOffset foreign = new StreamPartitionMsgOffset() {
      @Override
      public int compareTo(StreamPartitionMsgOffset o) {
        return 0;
      }

      @Override
      public StreamPartitionMsgOffset fromString(String s) {
        return this;
      }

      @Override
      public String toString() {
        return "5:6:0:1";
      }
    };
    assertEquals(new PulsarMsgOffset(5, 6, 0, 1), PulsarMsgOffset.of(foreign));
    PulsarMsgOffset own = new PulsarMsgOffset(5, 6, 0, 1);
    assertSame(own, PulsarMsgOffset.of(own));
    assertEquals(own, new PulsarMsgOffsetFactory().create(own));
  }

  @Test
  void comparesNumericallyFieldByFieldInOrder() {
    List<PulsarMsgOffset> sorted = List.of(
        PulsarMsgOffset.EARLIEST,
        new PulsarMsgOffset(2, 0, 0, -1),
        new PulsarMsgOffset(2, 9, 0, -1),
        // Numeric, not lexicographic: entry 10 after entry 9.
        new PulsarMsgOffset(2, 10, 0, -1),
        new PulsarMsgOffset(2, 10, 0, 0),
        new PulsarMsgOffset(2, 10, 0, 1),
        new PulsarMsgOffset(2, 10, 0, 10),
        new PulsarMsgOffset(2, 10, 1, -1),
        new PulsarMsgOffset(2, 11, 0, -1),
        // A later ledger is after any entry of an earlier one.
        new PulsarMsgOffset(10, 0, 0, -1),
        new PulsarMsgOffset(10, 0, 0, 3));
    List<PulsarMsgOffset> shuffled = new ArrayList<>(sorted);
    Collections.reverse(shuffled);
    Collections.swap(shuffled, 1, 7);
    Collections.sort(shuffled);
    assertEquals(sorted, shuffled);
    for (int i = 0; i < sorted.size(); i++) {
      for (int j = 0; j < sorted.size(); j++) {
        assertEquals(Integer.signum(Integer.compare(i, j)), Integer.signum(sorted.get(i).compareTo(sorted.get(j))),
            sorted.get(i) + " vs " + sorted.get(j));
      }
    }
  }

  @Test
  void compareToAgreesWithEqualsAndParsedCopies() {
    PulsarMsgOffset a = new PulsarMsgOffset(7, 3, 1, 2);
    PulsarMsgOffset b = PulsarMsgOffset.parse("7:3:1:2");
    assertEquals(0, a.compareTo(b));
    assertEquals(a, b);
    assertEquals(a.hashCode(), b.hashCode());
    assertNotEquals(a, new PulsarMsgOffset(7, 3, 1, 3));
    assertNotEquals(a, new PulsarMsgOffset(7, 3, -1, 2));
  }

  @Test
  void comparePositionIgnoresThePartitionIndex() {
    assertEquals(0, new PulsarMsgOffset(7, 3, -1, -1).comparePosition(new PulsarMsgOffset(7, 3, 4, -1)));
    assertTrue(new PulsarMsgOffset(7, 3, 9, 0).comparePosition(new PulsarMsgOffset(7, 3, 0, 1)) < 0);
    assertTrue(new PulsarMsgOffset(7, 4, 0, -1).comparePosition(new PulsarMsgOffset(7, 3, 9, 5)) > 0);
  }

  @Test
  void startMessageIdMatchesTheOffset() {
    assertSame(MessageId.earliest, PulsarMsgOffset.EARLIEST.toStartMessageId());

    MessageIdAdv whole = (MessageIdAdv) new PulsarMsgOffset(12, 34, 1, -1).toStartMessageId();
    assertEquals(12, whole.getLedgerId());
    assertEquals(34, whole.getEntryId());
    assertEquals(1, whole.getPartitionIndex());
    assertTrue(whole.getBatchIndex() < 0, "no batch index for a whole entry");

    MessageIdAdv inBatch = (MessageIdAdv) new PulsarMsgOffset(12, 34, 1, 5).toStartMessageId();
    assertTrue(inBatch instanceof BatchMessageIdImpl);
    assertEquals(12, inBatch.getLedgerId());
    assertEquals(34, inBatch.getEntryId());
    assertEquals(5, inBatch.getBatchIndex());
  }
}
