//! The engine, loading (digest check, compile or cache, import check, pre-link) and invoking
//! (fresh store and instance, every limit armed, every failure classified).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_model::manifest::Sha256Digest;
use palisade_model::{
    ApiPackage, ErrorKind, InvocationError, InvocationRequest, Limits, LogSource, Manifest,
    Outcome, Output, Usage,
};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::WasiCtxBuilder;

use crate::cache::{CacheSource, ComponentCache};
use crate::capture::{LogLimitExceeded, SharedCapture};
use crate::catalog::Catalog;
use crate::egress::EgressHooks;
use crate::host::{
    HostState, KvBudgetExhausted, MemoryLimitExceeded, MemoryLimiter, TableLimitExceeded, v1,
};
use crate::host_calls::{HostCalls, NoHostCalls};
use wasmtime_wasi_http::WasiHttpCtx;

/// How the engine is built. One engine serves every extension of a process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Pre-reserve instance slots (fast, tight tail latency) instead of mapping memory per call.
    pub pooling: bool,
    /// Invocations that may run at once; also the number of pool slots.
    pub max_concurrent: u32,
    /// Largest linear memory any one instance may get; sizes pool slots.
    pub max_memory_bytes: u64,
    /// Largest table any one instance may get.
    pub max_table_elements: usize,
    /// Wasm stack per invocation; deeper recursion traps with `stack_overflow`.
    pub max_wasm_stack: usize,
    /// Count fuel (a deterministic instruction budget). Epoch deadlines are always on.
    pub fuel_metering: bool,
    /// How often the epoch advances; deadlines are checked at this granularity.
    pub epoch_tick: Duration,
    /// Extra time beyond an invocation's deadline before the host abandons it, covering
    /// time spent in host calls where epochs cannot interrupt.
    pub deadline_grace: Duration,
    /// In-memory compiled-component cache budget.
    pub cache_memory_bytes: u64,
    /// Directory for serialized compiled components, if any.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Platform defaults for limits a manifest does not request.
    pub default_limits: Limits,
    /// Platform ceilings for every limit.
    pub ceiling_limits: Limits,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_concurrent: 64,
            max_memory_bytes: Limits::CEILING.memory_bytes,
            max_table_elements: 100_000,
            max_wasm_stack: 512 << 10,
            fuel_metering: true,
            epoch_tick: Duration::from_millis(1),
            deadline_grace: Duration::from_millis(100),
            cache_memory_bytes: 256 << 20,
            cache_dir: None,
            default_limits: Limits::DEFAULT,
            ceiling_limits: Limits::CEILING,
        }
    }
}

/// The runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine rejected the configuration (for example, the pooling allocator
    /// could not reserve its address space).
    #[error("could not create the wasm engine: {0}")]
    Engine(String),
    /// A host interface could not be linked.
    #[error("could not link host interfaces: {0}")]
    Link(String),
    /// The epoch ticker thread could not start.
    #[error("could not start the epoch ticker: {0}")]
    Ticker(#[from] std::io::Error),
}

/// A loaded, checked extension: compiled, its imports inside the catalog, pre-linked, ready to
/// instantiate. Cheap to clone.
#[derive(Clone)]
pub struct Extension {
    inner: Arc<ExtensionInner>,
}

struct ExtensionInner {
    name: String,
    version: semver::Version,
    api: ApiPackage,
    digest: Sha256Digest,
    limits: Limits,
    config: Arc<BTreeMap<String, String>>,
    pre: v1::ExtensionPre<HostState>,
    cache_source: CacheSource,
}

impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extension")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("api", &self.inner.api)
            .field("digest", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

impl Extension {
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn version(&self) -> &semver::Version {
        &self.inner.version
    }
    pub fn digest(&self) -> Sha256Digest {
        self.inner.digest
    }
    /// The limits the manifest asked for, after platform defaults and ceilings.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }
    /// Whether the compiled code came from memory, disk or a fresh compile.
    pub fn cache_source(&self) -> CacheSource {
        self.inner.cache_source
    }
}

/// Advances the engine's epoch until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The language-level sandbox: one engine, a compiled-component cache, and a fresh instance
/// per invocation.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    catalog: Catalog,
    cache: ComponentCache,
    config: RuntimeConfig,
    slots: Arc<tokio::sync::Semaphore>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(config.fuel_metering)
            .max_wasm_stack(config.max_wasm_stack)
            // Host functions run on the same fiber stack; leave them 1 MiB beyond the wasm stack.
            .async_stack_size(config.max_wasm_stack + (1 << 20));
        if config.pooling {
            let slots = config.max_concurrent;
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(slots)
                .total_core_instances(slots.saturating_mul(32))
                .total_memories(slots.saturating_mul(4))
                .total_tables(slots.saturating_mul(8))
                .total_stacks(slots)
                .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
                .table_elements(config.max_table_elements)
                .max_memories_per_component(4)
                .max_tables_per_component(8)
                .max_core_instances_per_component(32);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        v1::Extension::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = Arc::clone(&stop);
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("palisade-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })?;
        }

        Ok(Self {
            cache: ComponentCache::new(
                &engine,
                config.cache_memory_bytes,
                config.cache_dir.clone(),
            ),
            catalog: Catalog::builtin(),
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent as usize)),
            engine,
            linker,
            config,
            _ticker: EpochTicker { stop },
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn cache(&self) -> &ComponentCache {
        &self.cache
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Checks and prepares an extension: pinned digest, served API, compiled (or cached)
    /// component, imports inside the catalog, exports of the right types.
    pub fn load(&self, manifest: &Manifest, wasm: &[u8]) -> Result<Extension, InvocationError> {
        let digest = Sha256Digest(Sha256::digest(wasm).into());
        if let Some(pinned) = manifest.component.sha256
            && pinned != digest
        {
            return Err(InvocationError::new(
                ErrorKind::InvalidComponent,
                format!("component.sha256 is {pinned} but the component's SHA-256 is {digest}"),
            ));
        }
        let limits = Limits::resolve(
            manifest.limits.get_ref(),
            &self.config.default_limits,
            &self.config.ceiling_limits,
        );
        // A limit the engine cannot give would end in a trap of the engine's own, not in
        // `memory_limit`: refused here, at load, with what this engine gives.
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(InvocationError::new(
                ErrorKind::InvalidManifest,
                format!(
                    "limits.memory is {} bytes; this engine gives an instance at most {} bytes",
                    limits.memory_bytes, self.config.max_memory_bytes
                ),
            ));
        }
        let entry = self.catalog.entry(&manifest.extension.api)?;
        let (component, cache_source) = self
            .cache
            .get_or_compile(&self.engine, digest, wasm)
            .map_err(|e| {
                InvocationError::new(
                    ErrorKind::InvalidComponent,
                    format!("not a valid component: {e}"),
                )
            })?;
        self.catalog
            .check_imports(entry, &self.engine, &component)?;
        let pre = self.pre_link(&component)?;
        Ok(Extension {
            inner: Arc::new(ExtensionInner {
                name: manifest.extension.name.to_string(),
                version: manifest.extension.version.clone(),
                api: manifest.extension.api.clone(),
                digest,
                limits,
                config: Arc::new(manifest.config_values()),
                pre,
                cache_source,
            }),
        })
    }

    fn pre_link(
        &self,
        component: &Component,
    ) -> Result<v1::ExtensionPre<HostState>, InvocationError> {
        let invalid = |e: wasmtime::Error| {
            InvocationError::new(
                ErrorKind::InvalidComponent,
                format!("the component does not fit the extension world: {e:#}"),
            )
        };
        let instance_pre = self.linker.instantiate_pre(component).map_err(invalid)?;
        v1::ExtensionPre::new(instance_pre).map_err(invalid)
    }

    /// Runs one invocation under `limits` in a fresh instance, without host calls beyond
    /// logs and configuration (key-value calls answer `unavailable`).
    pub async fn invoke(
        &self,
        extension: &Extension,
        request: InvocationRequest,
        limits: &Limits,
    ) -> Outcome {
        self.invoke_with(extension, request, limits, Arc::new(NoHostCalls))
            .await
    }

    /// Runs one invocation under `limits` in a fresh instance, answering its key-value calls
    /// with `host`. Never panics and never hangs: every failure comes back as a typed error in
    /// the outcome.
    pub async fn invoke_with(
        &self,
        extension: &Extension,
        request: InvocationRequest,
        limits: &Limits,
        host: Arc<dyn HostCalls>,
    ) -> Outcome {
        let started = Instant::now();
        let input_bytes = request.body.len() as u64;
        if input_bytes > limits.input_bytes {
            let mut outcome = Outcome::rejected(InvocationError::new(
                ErrorKind::InputTooLarge,
                format!(
                    "the input is {input_bytes} bytes; the limit is {}",
                    limits.input_bytes
                ),
            ));
            outcome.usage.input_bytes = input_bytes;
            return outcome;
        }
        let Ok(Ok(_permit)) =
            tokio::time::timeout(limits.wall_time, Arc::clone(&self.slots).acquire_owned()).await
        else {
            return Outcome::rejected(InvocationError::new(
                ErrorKind::Overloaded,
                format!(
                    "all {} invocation slots stayed busy for the whole deadline",
                    self.config.max_concurrent
                ),
            ));
        };

        let capture = SharedCapture::new(started, limits.log_bytes, limits.log_lines);
        let wasi = WasiCtxBuilder::new()
            .stdout(capture.stream(LogSource::Stdout))
            .stderr(capture.stream(LogSource::Stderr))
            .build();
        let state = HostState {
            wasi,
            table: bounded_table(),
            // Never above what the engine gives, so the limiter (and `memory_limit`) is
            // always what stops a guest, whatever limit the caller passed.
            limiter: MemoryLimiter::new(
                limits.memory_bytes.min(self.config.max_memory_bytes),
                self.config.max_table_elements,
            ),
            capture: capture.clone(),
            config: Arc::clone(&extension.inner.config),
            egress: EgressHooks {
                host: Arc::clone(&host),
            },
            http: bounded_http(),
            host,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        if self.config.fuel_metering
            && let Err(error) = store.set_fuel(limits.fuel)
        {
            return Outcome::rejected(InvocationError::new(
                ErrorKind::Internal,
                format!("{error:#}"),
            ));
        }
        let deadline = started + limits.wall_time;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                // Yield so other invocations sharing this thread make progress.
                UpdateDeadline::Yield(1)
            })
        });

        let guest_request = v1::palisade::extension::types::Request {
            body: request.body,
            content_type: request.content_type,
            metadata: request.metadata,
        };
        let run = async {
            let instance = extension.inner.pre.instantiate_async(&mut store).await?;
            instance.call_handle(&mut store, &guest_request).await
        };
        let result =
            match tokio::time::timeout(limits.wall_time + self.config.deadline_grace, run).await {
                Err(_elapsed) => Err(InvocationError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the invocation did not finish within its {:?} deadline",
                        limits.wall_time
                    ),
                )),
                Ok(Err(error)) => Err(classify(&error, &capture, limits)),
                Ok(Ok(Err(guest_error))) => Err(guest_error_of(guest_error)),
                Ok(Ok(Ok(response))) => {
                    if response.body.len() as u64 > limits.output_bytes {
                        Err(InvocationError::new(
                            ErrorKind::OutputTooLarge,
                            format!(
                                "the output is {} bytes; the limit is {}",
                                response.body.len(),
                                limits.output_bytes
                            ),
                        ))
                    } else if let Some(problem) =
                        crate::bounds::content_type_problem(&response.content_type)
                    {
                        Err(InvocationError::new(ErrorKind::OutputTooLarge, problem))
                    } else {
                        Ok(Output {
                            body: response.body,
                            content_type: response.content_type,
                        })
                    }
                }
            };
        // Messages can carry guest text (its error, its panic line): bounded here, at the source.
        let result = result.map_err(|mut error| {
            error.message = crate::bounds::bound_message(error.message);
            error
        });

        let fuel_consumed = if self.config.fuel_metering {
            limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0))
        } else {
            0
        };
        let peak_memory_bytes = store.data().limiter.peak_bytes;
        drop(store);
        let (logs, log_bytes, log_lines) = capture.finish();
        let output_bytes = result.as_ref().map_or(0, |o| o.body.len() as u64);
        Outcome {
            result,
            usage: Usage {
                fuel_consumed,
                wall_time_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                peak_memory_bytes,
                input_bytes,
                output_bytes,
                log_bytes,
                log_lines,
            },
            logs,
            isolation: palisade_model::Isolation::default(),
        }
    }
}

fn guest_error_of(error: v1::palisade::extension::types::ExtensionError) -> InvocationError {
    use v1::palisade::extension::types::ExtensionError;
    let message = match error {
        ExtensionError::InvalidInput(message) => format!("invalid input: {message}"),
        ExtensionError::Failed(message) => format!("failed: {message}"),
    };
    InvocationError::new(
        ErrorKind::GuestError,
        crate::capture::sanitize_bounded(message.as_bytes(), crate::bounds::ERROR_MESSAGE_BYTES),
    )
}

/// Host-side resources one invocation may hold at once: `wasi:http` header maps, requests,
/// bodies, streams, pollables and the WASI resources. What the host holds for a guest is not
/// in its linear memory, so without this cap thousands of header maps took a worker to
/// 558 MB under a 16 MiB guest limit.
pub const MAX_HOST_RESOURCES: usize = 512;

/// Bytes of names and values one `wasi:http` header map may hold. With
/// [`MAX_HOST_RESOURCES`] this bounds header maps to 8 MiB per invocation.
pub const MAX_FIELDS_BYTES: usize = 16 * 1024;

fn bounded_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_HOST_RESOURCES);
    table
}

fn bounded_http() -> WasiHttpCtx {
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(MAX_FIELDS_BYTES);
    http
}

/// Maps a wasmtime error to the documented error kinds. Our own limit errors are checked
/// first: they are the cause even when wasmtime reports them inside a trap.
fn classify(error: &wasmtime::Error, capture: &SharedCapture, limits: &Limits) -> InvocationError {
    if let Some(exceeded) = error.downcast_ref::<MemoryLimitExceeded>() {
        return InvocationError::new(ErrorKind::MemoryLimit, exceeded.to_string());
    }
    if let Some(exceeded) = error.downcast_ref::<TableLimitExceeded>() {
        return InvocationError::new(ErrorKind::MemoryLimit, exceeded.to_string());
    }
    if let Some(exceeded) = error.downcast_ref::<LogLimitExceeded>() {
        return InvocationError::new(ErrorKind::LogLimit, exceeded.to_string());
    }
    if let Some(wasmtime::component::ResourceTableError::Full) =
        error.downcast_ref::<wasmtime::component::ResourceTableError>()
    {
        return InvocationError::new(
            ErrorKind::MemoryLimit,
            format!(
                "the guest made the host hold more than {MAX_HOST_RESOURCES} resources at once (HTTP header maps, requests, bodies, streams); they count against its memory"
            ),
        );
    }
    if let Some(
        wasmtime_wasi_http::FieldMapError::TotalSizeTooBig
        | wasmtime_wasi_http::FieldMapError::TooManyFields,
    ) = error.downcast_ref::<wasmtime_wasi_http::FieldMapError>()
    {
        return InvocationError::new(
            ErrorKind::MemoryLimit,
            format!(
                "an HTTP header map grew past {MAX_FIELDS_BYTES} bytes; host-side memory counts against the guest's"
            ),
        );
    }
    if let Some(exhausted) = error.downcast_ref::<KvBudgetExhausted>() {
        return InvocationError::new(ErrorKind::KvQuotaExceeded, exhausted.to_string());
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvocationError::new(
            ErrorKind::Trap,
            format!("the guest called exit({})", exit.0),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => InvocationError::new(
            ErrorKind::FuelExhausted,
            format!("the guest used its whole fuel budget of {}", limits.fuel),
        ),
        Some(Trap::Interrupt) => InvocationError::new(
            ErrorKind::Timeout,
            format!("the guest ran past its {:?} deadline", limits.wall_time),
        ),
        Some(Trap::StackOverflow) => InvocationError::new(
            ErrorKind::StackOverflow,
            "the guest's call stack overflowed",
        ),
        Some(trap) => {
            let mut message = trap.to_string();
            if let Some(stderr) = capture.stderr_tail() {
                message.push_str(&format!(" (guest stderr: {stderr})"));
            }
            InvocationError::new(ErrorKind::Trap, message)
        }
        None => {
            let text = format!("{error:#}");
            if text.contains("maximum concurrent") {
                InvocationError::new(ErrorKind::Overloaded, text)
            } else {
                InvocationError::new(ErrorKind::Trap, crate::capture::sanitize(text.as_bytes()))
            }
        }
    }
}
