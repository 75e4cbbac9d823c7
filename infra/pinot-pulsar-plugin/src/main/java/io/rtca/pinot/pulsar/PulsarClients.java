package io.rtca.pinot.pulsar;

import org.apache.pulsar.client.api.PulsarClient;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Closing clients without holding up Pinot's threads. */
final class PulsarClients {

  private static final Logger LOGGER = LoggerFactory.getLogger(PulsarClients.class);

  private PulsarClients() {
  }

  /**
   * Starts closing {@code client}: its readers, connections and then all of its threads, which Pulsar stops on a
   * thread of its own (a synchronous close waits about 2 s for the I/O threads' quiet period, which Pinot would pay on
   * every segment commit). Failures are logged.
   */
  static void closeInBackground(PulsarClient client, String owner) {
    client.closeAsync().whenComplete((ignored, error) -> {
      if (error != null) {
        LOGGER.warn("Error closing the Pulsar client of {}", owner, error);
      } else {
        LOGGER.debug("Pulsar client of {} closed", owner);
      }
    });
  }
}
