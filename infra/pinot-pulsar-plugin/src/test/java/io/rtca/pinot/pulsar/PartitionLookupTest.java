package io.rtca.pinot.pulsar;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import org.apache.pinot.spi.stream.PermanentConsumerException;
import org.apache.pinot.spi.stream.TransientConsumerException;
import org.apache.pulsar.client.api.PulsarClient;
import org.apache.pulsar.client.api.PulsarClientException;
import org.junit.jupiter.api.Test;

/**
 * How a failed partition look-up reaches Pinot: errors no retry fixes are permanent, the rest transient (every error
 * was an IllegalStateException, which the controller does not retry). The look-up against a real broker is in
 * {@link MissingTopicTest}.
 */
class PartitionLookupTest {

  private static final String TOPIC = "persistent://public/default/trades";

  private static RuntimeException classified(Throwable error) {
    return PartitionTopics.classify(error, TOPIC);
  }

  @Test
  void errorsNoRetryFixesArePermanent() {
    List<Throwable> permanent = List.of(
        PartitionTopics.doesNotExist(TOPIC, new PulsarClientException.TopicDoesNotExistException("")),
        new PulsarClientException.TopicDoesNotExistException("Namespace not found"),
        new PulsarClientException.NotFoundException("Topic not found"),
        new PulsarClientException.AuthenticationException("token expired"),
        new PulsarClientException.AuthorizationException("not authorized to lookup"),
        new PulsarClientException.InvalidTopicNameException("bad name"),
        new PulsarClientException.InvalidConfigurationException("Invalid topic name: persistent://a/b"));
    for (Throwable error : permanent) {
      RuntimeException e = classified(error);
      assertInstanceOf(PermanentConsumerException.class, e, error.toString());
      assertTrue(e.getMessage().contains(TOPIC), e.getMessage());
    }
  }

  @Test
  void errorsThatPassAreTransient() {
    List<Throwable> transients = List.of(
        new PulsarClientException.ConnectException("Connection refused: /127.0.0.1:6650"),
        new PulsarClientException.LookupException("Broker is not ready"),
        new PulsarClientException.TimeoutException("Lookup request timeout"),
        new PulsarClientException.TooManyRequestsException("Too many concurrent lookup requests"),
        new PulsarClientException.ServiceNotReadyException("Namespace bundle is being unloaded"),
        new PulsarClientException.BrokerMetadataException("metadata store timed out"),
        new PulsarClientException.AlreadyClosedException("client closing"),
        new PulsarClientException("unknown error"));
    for (Throwable error : transients) {
      RuntimeException e = classified(error);
      assertInstanceOf(TransientConsumerException.class, e, error.toString());
      assertTrue(e.getMessage().contains(TOPIC) && e.getMessage().contains(error.getMessage()), e.getMessage());
    }
  }

  @Test
  void theMissingTopicsErrorNamesItOnce() {
    PulsarClientException missing = new PulsarClientException.TopicDoesNotExistException("{\"errorMsg\":\"\"}");
    RuntimeException e = classified(PartitionTopics.doesNotExist(TOPIC, missing));
    assertEquals("org.apache.pulsar.client.api.PulsarClientException$TopicDoesNotExistException: Pulsar topic " + TOPIC
        + " does not exist (or its namespace does not): check the table's stream.pulsar.topic.name; the plugin does "
        + "not create topics", e.getMessage());
  }

  @Test
  void futureWrappersAreTakenOff() {
    PulsarClientException timeout = new PulsarClientException.TimeoutException("slow");
    assertEquals(timeout, PartitionTopics.unwrap(new ExecutionException(new CompletionException(timeout))));
    assertEquals(timeout, PartitionTopics.unwrap(timeout));
  }

  /** A client whose look-ups answer {@code answers} in turn, and which records how each was asked. */
  private static PulsarClient client(List<String> calls, List<CompletableFuture<List<String>>> answers) {
    return (PulsarClient) Proxy.newProxyInstance(PartitionLookupTest.class.getClassLoader(),
        new Class<?>[]{PulsarClient.class}, (proxy, method, args) -> {
          if (!method.getName().equals("getPartitionsForTopic")) {
            throw new UnsupportedOperationException(method.getName());
          }
          calls.add(args.length == 1 ? "creating" : "auto-creation " + args[1]);
          return answers.remove(0);
        });
  }

  @Test
  void theLookUpNeverAsksForCreation()
      throws Exception {
    List<String> calls = new ArrayList<>();
    PulsarClient client = client(calls, new ArrayList<>(List.of(CompletableFuture.completedFuture(List.of(TOPIC)))));
    assertEquals(List.of(TOPIC), PartitionTopics.list(client, TOPIC, 1000));
    assertEquals(List.of("auto-creation false"), calls);
  }

  @Test
  void aMissingTopicIsNamedAndPermanent() {
    List<String> calls = new ArrayList<>();
    PulsarClient client = client(calls, new ArrayList<>(List.of(CompletableFuture.failedFuture(
        new PulsarClientException.TopicDoesNotExistException("{\"errorMsg\":\"\"}")))));
    PermanentConsumerException e = assertThrows(PermanentConsumerException.class,
        () -> PartitionTopics.list(client, TOPIC, 1000));
    assertTrue(e.getMessage().contains("Pulsar topic " + TOPIC + " does not exist"), e.getMessage());
  }

  @Test
  void aBrokerBefore33GetsThePlainLookUp()
      throws Exception {
    List<String> calls = new ArrayList<>();
    PulsarClient client = client(calls, new ArrayList<>(List.of(
        CompletableFuture.failedFuture(new PulsarClientException.FeatureNotSupportedException("old broker",
            PulsarClientException.FailedFeatureCheck.SupportsGetPartitionedMetadataWithoutAutoCreation)),
        CompletableFuture.completedFuture(List.of(TOPIC)))));
    assertEquals(List.of(TOPIC), PartitionTopics.list(client, TOPIC, 1000));
    assertEquals(List.of("auto-creation false", "creating"), calls);
  }

  @Test
  void aLookUpThatFailsForNowIsTransient() {
    List<String> calls = new ArrayList<>();
    PulsarClient client = client(calls, new ArrayList<>(List.of(CompletableFuture.failedFuture(
        new PulsarClientException.TooManyRequestsException("Failed due to too many pending lookup requests")))));
    assertThrows(TransientConsumerException.class, () -> PartitionTopics.list(client, TOPIC, 1000));
  }
}
