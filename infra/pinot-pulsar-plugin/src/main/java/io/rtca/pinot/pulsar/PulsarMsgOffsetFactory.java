package io.rtca.pinot.pulsar;

import org.apache.pinot.spi.stream.StreamConfig;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffset;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffsetFactory;

/** Creates {@link PulsarMsgOffset}s from the text Pinot keeps in its segment metadata. Needs no configuration. */
public class PulsarMsgOffsetFactory implements StreamPartitionMsgOffsetFactory {

  @Override
  public void init(StreamConfig streamConfig) {
  }

  @Override
  public StreamPartitionMsgOffset create(String offsetStr) {
    return PulsarMsgOffset.parse(offsetStr);
  }

  @Override
  public StreamPartitionMsgOffset create(StreamPartitionMsgOffset other) {
    // Offsets are immutable: a copy is the same value.
    return PulsarMsgOffset.of(other);
  }
}
