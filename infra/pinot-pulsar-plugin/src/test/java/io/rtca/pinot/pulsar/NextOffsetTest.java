package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.apache.pulsar.client.api.MessageId;
import org.apache.pulsar.client.impl.BatchMessageIdImpl;
import org.apache.pulsar.client.impl.MessageIdImpl;
import org.apache.pulsar.client.impl.TopicMessageIdImpl;
import org.junit.jupiter.api.Test;

/**
 * The offset after each message must be (a) after the message itself and (b) not after the next message, also
 * across batches and ledger roll-over, so that a reader restarted at any stored offset reads exactly the messages
 * not yet consumed.
 */
class NextOffsetTest {

  private static MessageId single(long ledger, long entry, int partition) {
    return new MessageIdImpl(ledger, entry, partition);
  }

  private static MessageId batched(long ledger, long entry, int partition, int index, int size) {
    return new BatchMessageIdImpl(ledger, entry, partition, index, size, null);
  }

  @Test
  void nonBatchedMessageIsFollowedByTheNextEntry() {
    assertEquals(new PulsarMsgOffset(5, 8, -1, -1), PulsarMsgOffset.nextAfter(single(5, 7, -1)));
    assertEquals(new PulsarMsgOffset(5, 1, 3, -1), PulsarMsgOffset.nextAfter(single(5, 0, 3)));
  }

  @Test
  void messageInsideABatchIsFollowedByTheNextBatchIndex() {
    assertEquals(new PulsarMsgOffset(5, 7, 0, 1), PulsarMsgOffset.nextAfter(batched(5, 7, 0, 0, 3)));
    assertEquals(new PulsarMsgOffset(5, 7, 0, 2), PulsarMsgOffset.nextAfter(batched(5, 7, 0, 1, 3)));
  }

  @Test
  void lastMessageOfABatchIsFollowedByTheNextEntry() {
    assertEquals(new PulsarMsgOffset(5, 8, 0, -1), PulsarMsgOffset.nextAfter(batched(5, 7, 0, 2, 3)));
    // A batch of one message.
    assertEquals(new PulsarMsgOffset(5, 8, 0, -1), PulsarMsgOffset.nextAfter(batched(5, 7, 0, 0, 1)));
  }

  @Test
  void positionOfAMessageIsItsOwnId() {
    assertEquals(new PulsarMsgOffset(5, 7, 0, 2), PulsarMsgOffset.positionOf(batched(5, 7, 0, 2, 3)));
    assertEquals(new PulsarMsgOffset(5, 7, -1, -1), PulsarMsgOffset.positionOf(single(5, 7, -1)));
    // Ids of a partitioned topic's consumer are wrapped with the topic name.
    assertEquals(new PulsarMsgOffset(5, 7, 1, 0), PulsarMsgOffset.positionOf(
        new TopicMessageIdImpl("persistent://public/default/t-partition-1",
            (BatchMessageIdImpl) batched(5, 7, 1, 0, 2))));
  }

  @Test
  void rejectsIdsThatAreNotStoredMessages() {
    assertThrows(IllegalArgumentException.class, () -> PulsarMsgOffset.nextAfter(MessageId.earliest));
    assertThrows(IllegalArgumentException.class, () -> PulsarMsgOffset.nextAfter(MessageId.latest));
  }

  /**
   * A partition's messages across two ledgers (ledger 10 closed after entry 3, ledger 14 follows), with batched and
   * non-batched entries. Pulsar serves a reader opened inclusive at an offset the messages at or after that position
   * (an entry past the end of a closed ledger continues with the next ledger), which this test models.
   */
  @Test
  void restartingAtAnyStoredOffsetReadsExactlyTheRest() {
    List<MessageId> stream = new ArrayList<>();
    stream.add(single(10, 0, 2));
    stream.add(batched(10, 1, 2, 0, 3));
    stream.add(batched(10, 1, 2, 1, 3));
    stream.add(batched(10, 1, 2, 2, 3));
    stream.add(single(10, 2, 2));
    stream.add(batched(10, 3, 2, 0, 2));
    stream.add(batched(10, 3, 2, 1, 2));
    // Ledger roll-over: entry 10:4 never exists.
    stream.add(batched(14, 0, 2, 0, 1));
    stream.add(single(14, 1, 2));
    stream.add(batched(14, 2, 2, 0, 4));
    stream.add(batched(14, 2, 2, 1, 4));
    stream.add(batched(14, 2, 2, 2, 4));
    stream.add(batched(14, 2, 2, 3, 4));

    assertEquals(stream, readFrom(stream, PulsarMsgOffset.EARLIEST));
    for (int consumed = 1; consumed <= stream.size(); consumed++) {
      MessageId last = stream.get(consumed - 1);
      PulsarMsgOffset stored = PulsarMsgOffset.parse(PulsarMsgOffset.nextAfter(last).toString());
      assertTrue(stored.compareTo(PulsarMsgOffset.positionOf(last)) > 0, "offset after " + last + " must be later");
      assertEquals(stream.subList(consumed, stream.size()), readFrom(stream, stored),
          "restart after " + consumed + " messages at " + stored);
    }
    PulsarMsgOffset endOfStream = PulsarMsgOffset.nextAfter(stream.get(stream.size() - 1));
    assertEquals(new PulsarMsgOffset(14, 3, 2, -1), endOfStream);
  }

  /** Model of an inclusive Pulsar reader: every message whose (ledger, entry, batch) position is not before start. */
  private static List<MessageId> readFrom(List<MessageId> stream, PulsarMsgOffset start) {
    List<MessageId> read = new ArrayList<>();
    for (MessageId id : stream) {
      if (PulsarMsgOffset.positionOf(id).comparePosition(start) >= 0) {
        read.add(id);
      }
    }
    return read;
  }

  @Test
  void largestIsRightAfterTheLastMessage() {
    // Last entry of the partition, batched or not: later messages start at the next entry or a later ledger.
    PulsarMsgOffset largest = PulsarMsgOffset.afterLastMessage(batched(20, 41, 0, 9, 10));
    assertEquals(new PulsarMsgOffset(20, 42, 0, -1), largest);
    assertTrue(largest.compareTo(PulsarMsgOffset.positionOf(batched(20, 41, 0, 9, 10))) > 0);
    assertTrue(largest.compareTo(PulsarMsgOffset.positionOf(single(21, 0, 0))) < 0);
    assertEquals(new PulsarMsgOffset(20, 42, -1, -1), PulsarMsgOffset.afterLastMessage(single(20, 41, -1)));
    // A ledger without entries yet: the next message is its entry 0.
    assertEquals(new PulsarMsgOffset(20, 0, -1, -1), PulsarMsgOffset.afterLastMessage(single(20, -1, -1)));
    // No ledger at all: the beginning.
    assertEquals(PulsarMsgOffset.EARLIEST, PulsarMsgOffset.afterLastMessage(MessageId.earliest));
  }
}
