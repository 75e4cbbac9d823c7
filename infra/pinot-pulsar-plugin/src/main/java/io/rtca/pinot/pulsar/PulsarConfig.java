package io.rtca.pinot.pulsar;

import java.io.File;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.pinot.spi.stream.OffsetCriteria;
import org.apache.pinot.spi.stream.StreamConfig;
import org.apache.pulsar.client.api.AuthenticationFactory;
import org.apache.pulsar.client.api.ClientBuilder;
import org.apache.pulsar.client.api.PulsarClient;
import org.apache.pulsar.client.api.PulsarClientException;

/**
 * The plugin's settings, read from a table's {@code streamConfigs}. Keys are {@code stream.<streamType>.<name>}, with
 * stream type {@code pulsar}:
 *
 * <ul>
 *   <li>{@code stream.pulsar.topic.name} (required): the topic, e.g. {@code persistent://public/default/trades};</li>
 *   <li>{@code stream.pulsar.bootstrap.servers} (required): the Pulsar service URL, e.g.
 *   {@code pulsar://127.0.0.1:6650} ({@code pulsar+ssl://} for TLS);</li>
 *   <li>{@code stream.pulsar.authenticationToken} (optional): a JWT for token authentication;</li>
 *   <li>{@code stream.pulsar.tlsTrustCertsFilePath} (optional): PEM file of the CA(s) that signed the broker's TLS
 *   certificate.</li>
 * </ul>
 */
public final class PulsarConfig {

  public static final String BOOTSTRAP_SERVERS = "bootstrap.servers";
  public static final String AUTHENTICATION_TOKEN = "authenticationToken";
  public static final String TLS_TRUST_CERTS_FILE_PATH = "tlsTrustCertsFilePath";

  private final String _streamType;
  private final String _topicName;
  private final String _serviceUrl;
  private final String _authenticationToken;
  private final String _tlsTrustCertsFilePath;
  private final OffsetCriteria _offsetCriteria;
  private final long _connectionTimeoutMillis;

  public PulsarConfig(StreamConfig streamConfig) {
    if (streamConfig == null) {
      throw new IllegalStateException("No stream config: the consumer factory was not initialised by Pinot");
    }
    _streamType = streamConfig.getType();
    Map<String, String> map = streamConfig.getStreamConfigsMap();
    _topicName = trimToNull(streamConfig.getTopicName());
    if (_topicName == null) {
      throw new IllegalArgumentException("Missing Pulsar stream config '" + key(_streamType, "topic.name")
          + "' (the topic, e.g. persistent://public/default/trades)");
    }
    _serviceUrl = trimToNull(map.get(key(_streamType, BOOTSTRAP_SERVERS)));
    if (_serviceUrl == null) {
      throw new IllegalArgumentException("Missing Pulsar stream config '" + key(_streamType, BOOTSTRAP_SERVERS)
          + "' (the Pulsar service URL, e.g. pulsar://127.0.0.1:6650)");
    }
    String scheme = _serviceUrl.toLowerCase(Locale.ROOT);
    if (!(scheme.startsWith("pulsar://") || scheme.startsWith("pulsar+ssl://") || scheme.startsWith("http://")
        || scheme.startsWith("https://"))) {
      throw new IllegalArgumentException("Invalid Pulsar stream config '" + key(_streamType, BOOTSTRAP_SERVERS)
          + "' = '" + _serviceUrl + "': expected a Pulsar service URL such as pulsar://127.0.0.1:6650 "
          + "or pulsar+ssl://host:6651");
    }
    _authenticationToken = trimToNull(map.get(key(_streamType, AUTHENTICATION_TOKEN)));
    _tlsTrustCertsFilePath = trimToNull(map.get(key(_streamType, TLS_TRUST_CERTS_FILE_PATH)));
    _offsetCriteria = streamConfig.getOffsetCriteria();
    if (_offsetCriteria != null && !_offsetCriteria.isSmallest() && !_offsetCriteria.isLargest()) {
      throw new IllegalArgumentException("Unsupported Pulsar stream config '"
          + key(_streamType, "consumer.prop.auto.offset.reset") + "' = '" + _offsetCriteria.getOffsetString()
          + "': use smallest or largest");
    }
    _connectionTimeoutMillis = streamConfig.getConnectionTimeoutMillis();
  }

  static String key(String streamType, String name) {
    return "stream." + streamType + "." + name;
  }

  private static String trimToNull(String s) {
    if (s == null) {
      return null;
    }
    String t = s.trim();
    return t.isEmpty() ? null : t;
  }

  /**
   * A new client for these settings: one I/O and one listener thread, no periodic stats. The caller closes it.
   */
  public PulsarClient createClient()
      throws PulsarClientException {
    ClientBuilder builder = PulsarClient.builder()
        .serviceUrl(_serviceUrl)
        .ioThreads(1)
        .listenerThreads(1)
        .statsInterval(0, TimeUnit.SECONDS)
        .connectionTimeout((int) Math.min(Integer.MAX_VALUE, Math.max(1000L, _connectionTimeoutMillis)),
            TimeUnit.MILLISECONDS);
    if (_authenticationToken != null) {
      builder.authentication(AuthenticationFactory.token(_authenticationToken));
    }
    if (_tlsTrustCertsFilePath != null) {
      if (!new File(_tlsTrustCertsFilePath).canRead()) {
        throw new IllegalArgumentException("Pulsar stream config '" + key(_streamType, TLS_TRUST_CERTS_FILE_PATH)
            + "' = '" + _tlsTrustCertsFilePath + "': file not found or not readable");
      }
      builder.tlsTrustCertsFilePath(_tlsTrustCertsFilePath);
    }
    return builder.build();
  }

  public String getStreamType() {
    return _streamType;
  }

  public String getTopicName() {
    return _topicName;
  }

  public String getServiceUrl() {
    return _serviceUrl;
  }

  public String getAuthenticationToken() {
    return _authenticationToken;
  }

  public String getTlsTrustCertsFilePath() {
    return _tlsTrustCertsFilePath;
  }

  /** Timeout for connecting and for metadata look-ups ({@code stream.pulsar.connection.timeout.millis}). */
  public long getConnectionTimeoutMillis() {
    return _connectionTimeoutMillis;
  }

  /** Where a new partition starts: smallest (beginning of the topic) or largest (only later messages). */
  public OffsetCriteria getOffsetCriteria() {
    return _offsetCriteria;
  }

  @Override
  public String toString() {
    return "PulsarConfig{topic=" + _topicName + ", serviceUrl=" + _serviceUrl + ", token="
        + (_authenticationToken == null ? "none" : "***") + ", tlsTrustCertsFilePath=" + _tlsTrustCertsFilePath
        + ", offsetCriteria=" + _offsetCriteria + "}";
  }
}
