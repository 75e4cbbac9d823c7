package io.rtca.pinot.pulsar;

import java.util.ArrayList;
import java.util.List;
import org.apache.pinot.spi.stream.MessageBatch;
import org.apache.pinot.spi.stream.RowMetadata;
import org.apache.pinot.spi.stream.StreamMessageMetadata;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffset;

/**
 * The messages one fetch returned, each with the offset that follows it. The payload bytes are handed to the decoder
 * as they are (offset 0, full length).
 */
public class PulsarMessageBatch implements MessageBatch<byte[]> {

  private final PulsarMsgOffset _startOffset;
  private final List<byte[]> _payloads;
  private final List<PulsarMsgOffset> _nextOffsets;
  private final List<Long> _publishTimesMs;

  /** An empty batch that was fetched from {@code startOffset}. */
  public PulsarMessageBatch(PulsarMsgOffset startOffset) {
    this(startOffset, new ArrayList<>(), new ArrayList<>(), new ArrayList<>());
  }

  public PulsarMessageBatch(PulsarMsgOffset startOffset, List<byte[]> payloads, List<PulsarMsgOffset> nextOffsets,
      List<Long> publishTimesMs) {
    if (startOffset == null) {
      throw new IllegalArgumentException("startOffset must not be null");
    }
    if (payloads.size() != nextOffsets.size() || payloads.size() != publishTimesMs.size()) {
      throw new IllegalArgumentException("payloads, offsets and publish times must have the same length");
    }
    _startOffset = startOffset;
    _payloads = payloads;
    _nextOffsets = nextOffsets;
    _publishTimesMs = publishTimesMs;
  }

  /** Appends a message; {@code nextOffset} is the position right after it. */
  void add(byte[] payload, PulsarMsgOffset nextOffset, long publishTimeMs) {
    _payloads.add(payload);
    _nextOffsets.add(nextOffset);
    _publishTimesMs.add(publishTimeMs);
  }

  public PulsarMsgOffset getStartOffset() {
    return _startOffset;
  }

  @Override
  public int getMessageCount() {
    return _payloads.size();
  }

  @Override
  public byte[] getMessageAtIndex(int index) {
    return _payloads.get(index);
  }

  @Override
  public int getMessageOffsetAtIndex(int index) {
    return 0;
  }

  @Override
  public int getMessageLengthAtIndex(int index) {
    return _payloads.get(index).length;
  }

  /** Ingestion time = the time the broker recorded when the message was published. */
  @Override
  public RowMetadata getMetadataAtIndex(int index) {
    return new StreamMessageMetadata(_publishTimesMs.get(index));
  }

  /** Pulsar offsets are not numbers: Pinot 0.11 calls {@link #getNextStreamPartitionMsgOffsetAtIndex} instead. */
  @Override
  public long getNextStreamMessageOffsetAtIndex(int index) {
    throw new UnsupportedOperationException(
        "Pulsar offsets are ledgerId:entryId:partitionIndex:batchIndex, not longs; "
            + "use getNextStreamPartitionMsgOffsetAtIndex");
  }

  @Override
  public StreamPartitionMsgOffset getNextStreamPartitionMsgOffsetAtIndex(int index) {
    return _nextOffsets.get(index);
  }

  /** The offset after the last message, or the start offset if the batch is empty. */
  @Override
  public StreamPartitionMsgOffset getOffsetOfNextBatch() {
    return _nextOffsets.isEmpty() ? _startOffset : _nextOffsets.get(_nextOffsets.size() - 1);
  }
}
