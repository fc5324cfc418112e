package org.refloop.interop.hapi;

import java.util.ArrayList;
import java.util.List;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.autoconfigure.ImportAutoConfiguration;
import org.springframework.boot.autoconfigure.context.PropertyPlaceholderAutoConfiguration;
import org.springframework.boot.autoconfigure.web.embedded.EmbeddedWebServerFactoryCustomizerAutoConfiguration;
import org.springframework.boot.autoconfigure.web.servlet.ServletWebServerFactoryAutoConfiguration;
import org.springframework.context.annotation.Import;

/**
 * Refloop's HAPI FHIR test peer: a HAPI FHIR JPA server (FHIR R4) on an in-memory H2 database,
 * with classic R4 REST-hook subscriptions enabled, served at {@code http://127.0.0.1:PORT/fhir}.
 *
 * <p>Only the embedded servlet container is auto-configured by Spring Boot; everything else is
 * wired explicitly in {@link FhirServerConfig} so that no unwanted auto-configuration (Flyway,
 * Quartz, Spring Data repositories, Elasticsearch clients ...) runs against HAPI's beans.
 *
 * <p>Port: first argument (a bare number), or {@code --server.port=N}, or the environment
 * variable {@code HAPI_PEER_PORT}; default 8091.
 */
@SpringBootConfiguration
@ImportAutoConfiguration({
	PropertyPlaceholderAutoConfiguration.class,
	ServletWebServerFactoryAutoConfiguration.class,
	EmbeddedWebServerFactoryCustomizerAutoConfiguration.class
})
@Import(FhirServerConfig.class)
public class HapiPeerApplication {

	public static void main(String[] args) {
		List<String> springArgs = new ArrayList<>();
		for (String arg : args) {
			if (arg.matches("\\d+")) {
				springArgs.add("--server.port=" + arg);
			} else {
				springArgs.add(arg);
			}
		}
		SpringApplication app = new SpringApplication(HapiPeerApplication.class);
		app.run(springArgs.toArray(new String[0]));
	}
}
