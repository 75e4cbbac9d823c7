package io.rtca.pinot.pulsar;

import java.util.Set;
import org.apache.pinot.spi.stream.PartitionLevelConsumer;
import org.apache.pinot.spi.stream.StreamConsumerFactory;
import org.apache.pinot.spi.stream.StreamLevelConsumer;
import org.apache.pinot.spi.stream.StreamMetadataProvider;
import org.apache.pinot.spi.stream.StreamPartitionMsgOffsetFactory;

/**
 * Pinot's entry point to the plugin ({@code stream.pulsar.consumer.factory.class.name}). Pinot creates it by reflection
 * and hands it the table's stream config; every consumer and provider it creates owns its own Pulsar client.
 * Only low-level (partition-level) consumption is supported.
 */
public class PulsarConsumerFactory extends StreamConsumerFactory {

  private PulsarConfig config() {
    return new PulsarConfig(_streamConfig);
  }

  @Override
  public PartitionLevelConsumer createPartitionLevelConsumer(String clientId, int partition) {
    return new PulsarPartitionLevelConsumer(config(), clientId, partition);
  }

  @Override
  public StreamLevelConsumer createStreamLevelConsumer(String clientId, String tableName, Set<String> fieldsToRead,
      String groupId) {
    throw new UnsupportedOperationException("The Pulsar stream plugin supports only low-level consumption: set "
        + "stream.pulsar.consumer.type to lowlevel (table " + tableName + ")");
  }

  @Override
  public StreamMetadataProvider createPartitionMetadataProvider(String clientId, int partition) {
    return new PulsarStreamMetadataProvider(config(), clientId, partition);
  }

  @Override
  public StreamMetadataProvider createStreamMetadataProvider(String clientId) {
    return new PulsarStreamMetadataProvider(config(), clientId, PulsarStreamMetadataProvider.WHOLE_STREAM);
  }

  @Override
  public StreamPartitionMsgOffsetFactory createStreamMsgOffsetFactory() {
    return new PulsarMsgOffsetFactory();
  }
}
