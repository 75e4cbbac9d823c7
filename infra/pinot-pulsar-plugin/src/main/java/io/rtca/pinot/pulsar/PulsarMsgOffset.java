package io.rtca.pinot.pulsar;

import java.util.Objects;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffset;
import org.apache.pulsar.client.api.MessageId;
import org.apache.pulsar.client.api.MessageIdAdv;
import org.apache.pulsar.client.impl.BatchMessageIdImpl;
import org.apache.pulsar.client.impl.MessageIdImpl;

/**
 * A position in one partition of a Pulsar topic: the position of the NEXT message to read.
 *
 * <p>Text form {@code ledgerId:entryId:partitionIndex:batchIndex}; {@code -1:-1:-1:-1} is the beginning of the topic.
 * A batch index of -1 means "the whole entry" (the first message of it, batched or not). Offsets compare numerically
 * field by field in that order. A reader opened at {@link #toStartMessageId()} <em>inclusive</em> returns exactly the
 * messages at or after this position, also when the entry does not exist because its ledger was closed: the broker
 * then moves on to the first entry of the next ledger.
 *
 * <p>Instances are immutable.
 */
public final class PulsarMsgOffset implements StreamPartitionMsgOffset {

  /** The beginning of the topic. */
  public static final PulsarMsgOffset EARLIEST = new PulsarMsgOffset(-1L, -1L, -1, -1);

  private static final String SEPARATOR = ":";

  private final long _ledgerId;
  private final long _entryId;
  private final int _partitionIndex;
  private final int _batchIndex;

  public PulsarMsgOffset(long ledgerId, long entryId, int partitionIndex, int batchIndex) {
    _ledgerId = ledgerId;
    _entryId = entryId;
    _partitionIndex = partitionIndex;
    _batchIndex = batchIndex;
  }

  /**
   * Parses the text form {@code ledgerId:entryId:partitionIndex:batchIndex}.
   *
   * @throws IllegalArgumentException if the text is not four integers separated by colons
   */
  public static PulsarMsgOffset parse(String text) {
    if (text == null) {
      throw new IllegalArgumentException("Pulsar offset must not be null");
    }
    String[] parts = text.trim().split(SEPARATOR, -1);
    if (parts.length != 4) {
      throw new IllegalArgumentException(
          "Invalid Pulsar offset '" + text + "': expected ledgerId:entryId:partitionIndex:batchIndex");
    }
    try {
      return new PulsarMsgOffset(Long.parseLong(parts[0].trim()), Long.parseLong(parts[1].trim()),
          Integer.parseInt(parts[2].trim()), Integer.parseInt(parts[3].trim()));
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(
          "Invalid Pulsar offset '" + text + "': expected ledgerId:entryId:partitionIndex:batchIndex (integers)", e);
    }
  }

  /** This offset type, or any offset whose text form is ours (e.g. one Pinot rebuilt from its ZooKeeper record). */
  public static PulsarMsgOffset of(StreamPartitionMsgOffset offset) {
    if (offset == null) {
      throw new IllegalArgumentException("Pulsar offset must not be null");
    }
    if (offset instanceof PulsarMsgOffset) {
      return (PulsarMsgOffset) offset;
    }
    return parse(offset.toString());
  }

  /** The position of the message with this id itself (where a reader must start to return it first). */
  public static PulsarMsgOffset positionOf(MessageId messageId) {
    MessageIdAdv id = advanced(messageId);
    return new PulsarMsgOffset(id.getLedgerId(), id.getEntryId(), id.getPartitionIndex(),
        id.getBatchIndex() >= 0 ? id.getBatchIndex() : -1);
  }

  /**
   * The position right after the message with this id, computed from the id itself.
   *
   * <ul>
   *   <li>a message inside a batch that is not the batch's last one: the next batch index of the same entry;</li>
   *   <li>otherwise (not batched, or the last message of its batch): the whole next entry of the same ledger,
   *   {@code ledgerId:entryId+1:partition:-1}. If the ledger was closed after this entry, the broker starts such a
   *   reader at the first entry of the following ledger, so no message is skipped nor read twice.</li>
   * </ul>
   */
  public static PulsarMsgOffset nextAfter(MessageId messageId) {
    MessageIdAdv id = advanced(messageId);
    return nextAfter(id.getLedgerId(), id.getEntryId(), id.getPartitionIndex(), id.getBatchIndex(),
        id.getBatchSize());
  }

  /** See {@link #nextAfter(MessageId)}; {@code batchSize} is the number of messages in the entry (0 if unknown). */
  static PulsarMsgOffset nextAfter(long ledgerId, long entryId, int partitionIndex, int batchIndex, int batchSize) {
    // Negative: MessageId.earliest; Long.MAX_VALUE: MessageId.latest. Neither is a message.
    if (ledgerId < 0 || entryId < 0 || ledgerId == Long.MAX_VALUE || entryId == Long.MAX_VALUE) {
      throw new IllegalArgumentException(
          "Not the id of a stored message: " + ledgerId + SEPARATOR + entryId + SEPARATOR + partitionIndex);
    }
    if (batchIndex >= 0 && batchIndex < batchSize - 1) {
      return new PulsarMsgOffset(ledgerId, entryId, partitionIndex, batchIndex + 1);
    }
    return new PulsarMsgOffset(ledgerId, entryId + 1, partitionIndex, -1);
  }

  /**
   * The position right after the last message of a partition, from the id the broker reports for it: only messages
   * published later are at or after it. An empty topic (no ledger yet) gives {@link #EARLIEST}.
   */
  public static PulsarMsgOffset afterLastMessage(MessageId lastMessageId) {
    MessageIdAdv id = advanced(lastMessageId);
    if (id.getLedgerId() < 0) {
      return EARLIEST;
    }
    // An entry id of -1 means "no entry yet in this ledger": the next message is entry 0.
    return new PulsarMsgOffset(id.getLedgerId(), Math.max(id.getEntryId(), -1L) + 1, id.getPartitionIndex(), -1);
  }

  private static MessageIdAdv advanced(MessageId messageId) {
    if (!(messageId instanceof MessageIdAdv)) {
      throw new IllegalArgumentException("Unsupported Pulsar message id type: "
          + (messageId == null ? "null" : messageId.getClass().getName()));
    }
    return (MessageIdAdv) messageId;
  }

  /** The id to open a reader at, with {@code startMessageIdInclusive()}. */
  public MessageId toStartMessageId() {
    if (isEarliest()) {
      return MessageId.earliest;
    }
    if (_batchIndex >= 0) {
      return new BatchMessageIdImpl(_ledgerId, _entryId, _partitionIndex, _batchIndex);
    }
    return new MessageIdImpl(_ledgerId, _entryId, _partitionIndex);
  }

  public boolean isEarliest() {
    return _ledgerId < 0;
  }

  public long getLedgerId() {
    return _ledgerId;
  }

  public long getEntryId() {
    return _entryId;
  }

  public int getPartitionIndex() {
    return _partitionIndex;
  }

  public int getBatchIndex() {
    return _batchIndex;
  }

  /**
   * Compares the place in the stream only (ledger, entry, batch index), ignoring the partition index, which is the
   * same for all messages of one partition but may be reported as -1 by some broker answers.
   */
  public int comparePosition(PulsarMsgOffset other) {
    int c = Long.compare(_ledgerId, other._ledgerId);
    if (c == 0) {
      c = Long.compare(_entryId, other._entryId);
    }
    if (c == 0) {
      c = Integer.compare(_batchIndex, other._batchIndex);
    }
    return c;
  }

  @Override
  public int compareTo(StreamPartitionMsgOffset o) {
    PulsarMsgOffset other = of(o);
    int c = Long.compare(_ledgerId, other._ledgerId);
    if (c == 0) {
      c = Long.compare(_entryId, other._entryId);
    }
    if (c == 0) {
      c = Integer.compare(_partitionIndex, other._partitionIndex);
    }
    if (c == 0) {
      c = Integer.compare(_batchIndex, other._batchIndex);
    }
    return c;
  }

  @Override
  public StreamPartitionMsgOffset fromString(String streamPartitionMsgOffsetStr) {
    return parse(streamPartitionMsgOffsetStr);
  }

  @Override
  public String toString() {
    return _ledgerId + SEPARATOR + _entryId + SEPARATOR + _partitionIndex + SEPARATOR + _batchIndex;
  }

  @Override
  public boolean equals(Object o) {
    if (this == o) {
      return true;
    }
    if (!(o instanceof PulsarMsgOffset)) {
      return false;
    }
    PulsarMsgOffset that = (PulsarMsgOffset) o;
    return _ledgerId == that._ledgerId && _entryId == that._entryId && _partitionIndex == that._partitionIndex
        && _batchIndex == that._batchIndex;
  }

  @Override
  public int hashCode() {
    return Objects.hash(_ledgerId, _entryId, _partitionIndex, _batchIndex);
  }
}
