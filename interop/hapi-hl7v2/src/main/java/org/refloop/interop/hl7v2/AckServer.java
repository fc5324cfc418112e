package org.refloop.interop.hl7v2;

import ca.uhn.hl7v2.DefaultHapiContext;
import ca.uhn.hl7v2.HL7Exception;
import ca.uhn.hl7v2.HapiContext;
import ca.uhn.hl7v2.app.HL7Service;
import ca.uhn.hl7v2.app.SimpleServer;
import ca.uhn.hl7v2.model.Message;
import ca.uhn.hl7v2.protocol.ReceivingApplication;
import ca.uhn.hl7v2.util.StandardSocketFactory;
import ca.uhn.hl7v2.util.idgenerator.InMemoryIDGenerator;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.SocketAddress;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

/**
 * An ACK-only MLLP server on HAPI HL7v2: every message is parsed by HAPI's PipeParser into its
 * v2.5.1 structure (with HAPI's default validation) and answered with {@code generateACK()}.
 * Nothing is stored. Parse or validation failures are answered by HAPI itself (AE/AR with ERR).
 *
 * <p>Usage: {@code java -jar refloop-hapi-hl7v2-peer.jar PORT [--log-messages]}. Binds 127.0.0.1
 * only. Prints "listening on 127.0.0.1:PORT" once it accepts connections. With
 * {@code --log-messages}, prints one line per message: control id, message structure and the
 * ACK code (no message content).
 */
public final class AckServer {

    private AckServer() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: AckServer PORT [--log-messages]");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        boolean logMessages = args.length > 1 && "--log-messages".equals(args[1]);

        HapiContext context = new DefaultHapiContext();
        context.setSocketFactory(new LoopbackSocketFactory());
        // ACK control ids from memory (HAPI's default keeps a counter in ./id_file)
        context.getParserConfiguration().setIdGenerator(new InMemoryIDGenerator());
        // acceptAll: a message carrying an MSA (an RRI answering a REF) is an application
        // message too; without it HAPI takes it for a reply to one of its own and never answers
        HL7Service server = new SimpleServer(context, port, false, true);
        AtomicLong received = new AtomicLong();
        server.registerApplication("*", "*", new AckApplication(received, logMessages));
        server.startAndWait();
        System.out.println("listening on 127.0.0.1:" + port);
        System.out.flush();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.stop();
            System.out.println("stopped after " + received.get() + " messages");
            System.out.flush();
            stopped.countDown();
        }));
        stopped.await();
    }

    /** Answers every message with HAPI's own ACK (MSA-1 AA). */
    static final class AckApplication implements ReceivingApplication<Message> {
        private final AtomicLong received;
        private final boolean logMessages;

        AckApplication(AtomicLong received, boolean logMessages) {
            this.received = received;
            this.logMessages = logMessages;
        }

        @Override
        public Message processMessage(Message message, Map<String, Object> metadata)
                throws HL7Exception {
            received.incrementAndGet();
            try {
                Message ack = message.generateACK();
                if (logMessages) {
                    System.out.println("message " + message.getName()
                            + " control=" + terser(message, "/MSH-10")
                            + " ack=" + terser(ack, "/MSA-1"));
                    System.out.flush();
                }
                return ack;
            } catch (IOException exc) {
                throw new HL7Exception(exc);
            }
        }

        @Override
        public boolean canProcess(Message message) {
            return true;
        }

        private static String terser(Message message, String path) {
            try {
                return new ca.uhn.hl7v2.util.Terser(message).get(path);
            } catch (HL7Exception exc) {
                return "?";
            }
        }
    }

    /** HAPI binds its acceptor to every interface; this keeps it on the loopback address. */
    static final class LoopbackSocketFactory extends StandardSocketFactory {
        @Override
        public ServerSocket createServerSocket() throws IOException {
            return new LoopbackServerSocket();
        }
    }

    static final class LoopbackServerSocket extends ServerSocket {
        LoopbackServerSocket() throws IOException {
            super();
            setReuseAddress(true);
        }

        @Override
        public void bind(SocketAddress endpoint, int backlog) throws IOException {
            int port = endpoint instanceof InetSocketAddress address ? address.getPort() : 0;
            super.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), backlog);
        }
    }
}
