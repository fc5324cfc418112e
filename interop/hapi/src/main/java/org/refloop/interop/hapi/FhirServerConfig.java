package org.refloop.interop.hapi;

import java.util.Properties;

import javax.sql.DataSource;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.r5.JpaR5Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.SubscriptionTriggeringProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.subscription.match.config.SubscriptionProcessorConfig;
import ca.uhn.fhir.jpa.subscription.match.deliver.email.IEmailSender;
import ca.uhn.fhir.jpa.subscription.submit.config.SubscriptionSubmitterConfig;
import ca.uhn.fhir.jpa.topic.SubscriptionTopicConfig;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import jakarta.persistence.EntityManagerFactory;
import org.apache.commons.dbcp2.BasicDataSource;
import org.hl7.fhir.dstu2.model.Subscription.SubscriptionChannelType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.context.annotation.Profile;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * Wiring of the HAPI FHIR JPA server and its subscription engine: FHIR R4 by default, FHIR R5
 * with the Spring profile {@code r5} (R5 topic-based Subscriptions: SubscriptionTopic resources
 * and {@code subscription-notification} Bundles).
 *
 * <p>HAPI's own configuration classes provide the DAOs, resource providers, search, batch2 jobs and
 * the subscription matcher/deliverer; this class supplies what they expect from the application:
 * data source, entity manager factory, transaction manager, storage/partition/subscription
 * settings, an (unused) e-mail sender, and the {@link RestfulServer} servlet at {@code /fhir/*}.
 */
@Configuration
@Import({
	FhirServerConfig.R4.class,
	FhirServerConfig.R5.class,
	HapiJpaConfig.class,
	ThreadPoolFactoryConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	SubscriptionSubmitterConfig.class,
	SubscriptionProcessorConfig.class,
	SubscriptionChannelConfig.class
})
public class FhirServerConfig {

	private static final Logger ourLog = LoggerFactory.getLogger(FhirServerConfig.class);

	/** FHIR R4 (the default): classic criteria Subscriptions. */
	@Configuration
	@Profile("!r5")
	@Import(JpaR4Config.class)
	public static class R4 {}

	/** FHIR R5 (profile {@code r5}): topic-based Subscriptions, matched against SubscriptionTopics. */
	@Configuration
	@Profile("r5")
	@Import({JpaR5Config.class, SubscriptionTopicConfig.class})
	public static class R5 {}

	// ---------------------------------------------------------------- storage

	@Bean(destroyMethod = "close")
	public BasicDataSource dataSource(@Value("${refloop.hapi.jdbc-url}") String theJdbcUrl) {
		BasicDataSource ds = new BasicDataSource();
		ds.setDriverClassName("org.h2.Driver");
		ds.setUrl(theJdbcUrl);
		ds.setUsername("sa");
		ds.setPassword("");
		ds.setMaxTotal(20);
		return ds;
	}

	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			DataSource theDataSource,
			ConfigurableListableBeanFactory theBeanFactory,
			FhirContext theFhirContext,
			JpaStorageSettings theStorageSettings) {
		LocalContainerEntityManagerFactoryBean retVal =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(theBeanFactory, theFhirContext, theStorageSettings);
		retVal.setPersistenceUnitName("HAPI_PU");
		retVal.setDataSource(theDataSource);

		Properties props = new Properties();
		props.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
		// Fresh in-memory database on every start: let Hibernate create the schema.
		props.put("hibernate.hbm2ddl.auto", "update");
		props.put("hibernate.format_sql", "false");
		props.put("hibernate.show_sql", "false");
		props.put("hibernate.jdbc.batch_size", "20");
		props.put("hibernate.cache.use_query_cache", "false");
		props.put("hibernate.cache.use_second_level_cache", "false");
		props.put("hibernate.cache.use_structured_entries", "false");
		props.put("hibernate.cache.use_minimal_puts", "false");
		// No full-text indexing: no Lucene / Elasticsearch at runtime.
		props.put("hibernate.search.enabled", "false");
		retVal.setJpaProperties(props);
		return retVal;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory theEntityManagerFactory) {
		JpaTransactionManager retVal = new JpaTransactionManager();
		retVal.setEntityManagerFactory(theEntityManagerFactory);
		return retVal;
	}

	@Bean
	public JpaStorageSettings jpaStorageSettings(
			@Value("${refloop.hapi.allow-multiple-delete:true}") boolean theAllowMultipleDelete,
			@Value("${refloop.hapi.expunge-enabled:true}") boolean theExpungeEnabled,
			@Value("${refloop.hapi.reuse-cached-search-results-millis:60000}") long theReuseCachedSearchMillis) {
		JpaStorageSettings retVal = new JpaStorageSettings();
		retVal.setAllowMultipleDelete(theAllowMultipleDelete);
		retVal.setExpungeEnabled(theExpungeEnabled);
		retVal.setDeleteExpungeEnabled(theExpungeEnabled);
		retVal.setReuseCachedSearchResultsForMillis(theReuseCachedSearchMillis);
		return retVal;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		// Partitioning disabled (HAPI default).
		return new PartitionSettings();
	}

	// ----------------------------------------------------------- subscriptions

	@Bean
	public SubscriptionSettings subscriptionSettings(
			@Value("${refloop.hapi.subscription.polling-interval-ms:1000}") long thePollingIntervalMs,
			@Value("${refloop.hapi.subscription.queue-immediately:false}") boolean theQueueImmediately) {
		SubscriptionSettings retVal = new SubscriptionSettings();
		// Only classic R4 rest-hook delivery (no websocket, e-mail or message channels).
		retVal.addSupportedSubscriptionType(SubscriptionChannelType.RESTHOOK);
		// Resource changes (Subscriptions included) are persisted and pushed to the in-memory
		// matching queue by a scheduled pass; HAPI's default interval is 5000 ms.
		retVal.setSubscriptionIntervalInMs(thePollingIntervalMs);
		// HAPI can also queue Subscription changes at once, but in 8.8.0 that message races the
		// commit ("HAPI-2001: Resource Subscription/x is not known", retried after 1 s), so it is
		// off by default here.
		retVal.setSubscriptionChangeQueuedImmediately(theQueueImmediately);
		return retVal;
	}

	/** Required by HAPI's delivery listener factory; e-mail channels are not enabled. */
	@Bean
	public IEmailSender emailSender() {
		return theDetails -> ourLog.warn("E-mail subscriptions are not supported by this peer; dropping {}", theDetails);
	}

	// ---------------------------------------------------------------- REST server

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> theSystemDao,
			ResourceProviderFactory theResourceProviderFactory,
			IJpaSystemProvider theSystemProvider,
			SubscriptionTriggeringProvider theSubscriptionTriggeringProvider,
			JpaStorageSettings theStorageSettings,
			ISearchParamRegistry theSearchParamRegistry,
			IValidationSupport theValidationSupport,
			DatabaseBackedPagingProvider thePagingProvider) {
		FhirContext ctx = theSystemDao.getContext();
		ctx.setNarrativeGenerator(new NullNarrativeGenerator());

		RestfulServer server = new RestfulServer(ctx);
		server.registerProviders(theResourceProviderFactory.createProviders());
		server.registerProvider(theSystemProvider);
		// $trigger-subscription (manual re-delivery)
		server.registerProvider(theSubscriptionTriggeringProvider);

		JpaCapabilityStatementProvider capabilityStatementProvider = new JpaCapabilityStatementProvider(
				server, theSystemDao, theStorageSettings, theSearchParamRegistry, theValidationSupport);
		capabilityStatementProvider.setImplementationDescription(
				"Refloop HAPI FHIR " + ctx.getVersion().getVersion().name() + " test peer");
		server.setServerConformanceProvider(capabilityStatementProvider);

		server.setPagingProvider(thePagingProvider);
		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServletRegistration(RestfulServer theRestfulServer) {
		ServletRegistrationBean<RestfulServer> retVal = new ServletRegistrationBean<>(theRestfulServer, "/fhir/*");
		retVal.setName("fhir");
		retVal.setLoadOnStartup(1);
		return retVal;
	}
}
