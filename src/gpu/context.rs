//! The device, and the plumbing every op shares: pipelines with an explicit layout, parameter
//! blocks behind one dynamic-offset uniform binding, a command encoder that counts dispatches, and
//! asynchronous read-back that works natively and in the browser.

use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::params::ShaderParams;
use super::timer::Timer;
use crate::error::{Error, Result};

/// Bytes of one parameter block: every op's uniform struct fits in 16 words.
pub(crate) const PARAM_BLOCK: u64 = 64;
/// Bytes of one page of parameter blocks; more pages are added when a submission needs them.
const PARAM_PAGE: u64 = 64 << 10;

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The adapter's own limits, all requested for the device.
    pub limits: wgpu::Limits,
    params_layout: wgpu::BindGroupLayout,
    /// See [`GpuContext::subgroup_lanes`].
    subgroup_lanes: Option<u32>,
    /// Why the device was lost, once it is (driver reset, GPU process crash, `destroy`).
    lost: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Opens the first high-performance adapter with the adapter's own limits (not wgpu's defaults,
    /// which would cap storage bindings at 128 MiB).
    // In the browser wgpu's handles are single-threaded (not Send); one Arc type serves both targets.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub async fn new() -> Result<Arc<GpuContext>> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        let adapter = instance.request_adapter(&options).await.map_err(|e| {
            Error::Gpu(format!(
                "no GPU adapter found ({e}); natively a Vulkan driver is needed, e.g. lavapipe from the \
                 mesa-vulkan-drivers package (`cargo xtask setup` installs it)"
            ))
        })?;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tokenformer"),
                // Timestamps serve `bench`'s per-dispatch times only.
                required_features: adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY),
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("cannot open the GPU device: {e}")))?;
        let params_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("params"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: NonZeroU64::new(PARAM_BLOCK),
                },
                count: None,
            }],
        });
        let lost = Arc::new(Mutex::new(None));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *flag.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{reason:?}: {message}"));
        });
        let info = adapter.get_info();
        let mut ctx = GpuContext { device, queue, info, limits, params_layout, subgroup_lanes: None, lost };
        ctx.subgroup_lanes = super::subgroup_probe::subgroup_lanes(&ctx).await?;
        Ok(Arc::new(ctx))
    }

    /// An error once the device is lost: nothing submitted to it runs any more, and a new engine
    /// (a new device) is the way out.
    pub fn check_alive(&self) -> Result<()> {
        match &*self.lost.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(Error::Gpu(format!("the GPU device was lost ({why}); load the model again"))),
            None => Ok(()),
        }
    }

    /// "name (backend)", e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Runs `make` (kernels, buffers, bind groups) and turns what the device refuses into an error
    /// naming `what`, rather than wgpu's default (a panic natively, an uncaptured error in the
    /// browser): a browser or driver whose shader compiler rejects a kernel fails the load cleanly.
    pub(crate) async fn refusals<T>(&self, what: &str, make: impl FnOnce() -> T) -> Result<T> {
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let made = make();
        let refused = validation.pop().await.or(internal.pop().await);
        match refused {
            Some(e) => Err(Error::Gpu(format!("the GPU refused {what}: {e}"))),
            None => Ok(made),
        }
    }

    /// Lanes of the adapter's smallest subgroup, if the decode products may sum through subgroup
    /// shuffles: natively on most adapters (lavapipe included), never in browsers through wgpu 30.
    pub fn subgroup_lanes(&self) -> Option<u32> {
        self.subgroup_lanes
    }

    /// Sends the queue's pending buffer writes to the device and, natively, waits for them, so
    /// their staging memory is released as a model's gigabytes are written through the queue.
    pub(crate) fn flush_writes(&self) -> Result<()> {
        self.queue.submit([]);
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        Ok(())
    }

    /// Largest buffer one binding may cover.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    pub(crate) fn buffer(&self, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            // Zero-sized bindings are invalid; whole quads let any buffer be read as a vec4 array
            // (a partial last quad would be out of its bounds).
            size: bytes.max(16).next_multiple_of(16),
            usage,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer the shaders read and write, which the CPU can fill and read back.
    pub(crate) fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        use wgpu::BufferUsages as U;
        self.buffer(label, bytes, U::STORAGE | U::COPY_DST | U::COPY_SRC)
    }

    pub(crate) fn storage_init(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let buffer = self.storage(label, data.len() as u64);
        self.queue.write_buffer(&buffer, 0, data);
        buffer
    }

    /// Bytes between parameter blocks: a block, rounded up to the device's uniform offset alignment.
    fn param_stride(&self) -> u64 {
        PARAM_BLOCK.max(self.limits.min_uniform_buffer_offset_alignment as u64)
    }
}

/// How a shader uses one storage binding of group 0.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    Read,
    ReadWrite,
}

/// A compute pipeline whose group 0 holds the op's storage buffers and group 1 its parameter block.
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// What its dispatches are counted as in [`PassStats`](super::PassStats).
    label: &'static str,
}

impl Kernel {
    pub fn new(ctx: &GpuContext, label: &'static str, source: &str, bindings: &[Access]) -> Kernel {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, access)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: matches!(access, Access::Read) },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries });
        Self::with_layout(ctx, label, source, layout)
    }

    /// A second pipeline over the same bind group layout, so bind groups serve both.
    pub fn sibling(&self, ctx: &GpuContext, label: &'static str, source: &str) -> Kernel {
        Self::with_layout(ctx, label, source, self.layout.clone())
    }

    fn with_layout(ctx: &GpuContext, label: &'static str, source: &str, layout: wgpu::BindGroupLayout) -> Kernel {
        let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline_layout = ctx.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout), Some(&ctx.params_layout)],
            immediate_size: 0,
        });
        let pipeline = ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel { pipeline, layout, label }
    }

    /// Binds whole buffers to bindings 0, 1, … of group 0.
    pub fn bind(&self, ctx: &GpuContext, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// Parameter blocks of one submission, in pages of uniform memory reused from one submission to
/// the next (a queue write before each submit fills them).
#[derive(Default)]
pub(crate) struct ParamPages {
    pages: Vec<(wgpu::Buffer, wgpu::BindGroup)>,
}

impl ParamPages {
    fn page(&mut self, ctx: &GpuContext, index: usize) -> &wgpu::BindGroup {
        while self.pages.len() <= index {
            use wgpu::BufferUsages as U;
            let buffer = ctx.buffer("params", PARAM_PAGE, U::UNIFORM | U::COPY_DST);
            let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("params"),
                layout: &ctx.params_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &buffer,
                        offset: 0,
                        size: NonZeroU64::new(PARAM_BLOCK),
                    }),
                }],
            });
            self.pages.push((buffer, bind));
        }
        &self.pages[index].1
    }
}

/// A dispatch as recorded, for `bench`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dispatch {
    pub kind: &'static str,
    pub workgroups: u32,
    /// Weight bytes a product reads (0 for other kernels).
    pub weight_bytes: u64,
}

/// One command encoder: every dispatch of a forward pass (and the sampler, and the read-back copy)
/// goes into it, then one queue submission.
pub(crate) struct Encoder<'a> {
    ctx: &'a GpuContext,
    params: &'a mut ParamPages,
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    /// Parameter bytes per page.
    bytes: Vec<Vec<u8>>,
    /// Every dispatch, in order.
    pub recorded: Vec<Dispatch>,
    /// Stamps each dispatch's start and end, each in a pass of its own (see [`Timer`]).
    timer: Option<&'a Timer>,
    /// Dispatches stamped so far.
    stamped: usize,
}

impl<'a> Encoder<'a> {
    pub fn new(ctx: &'a GpuContext, params: &'a mut ParamPages) -> Encoder<'a> {
        let encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        Encoder {
            ctx,
            params,
            encoder,
            pass: None,
            bytes: vec![Vec::new()],
            recorded: Vec::new(),
            timer: None,
            stamped: 0,
        }
    }

    /// An encoder whose dispatches `timer` stamps.
    pub fn timed(ctx: &'a GpuContext, params: &'a mut ParamPages, timer: &'a Timer) -> Encoder<'a> {
        Encoder { timer: Some(timer), ..Encoder::new(ctx, params) }
    }

    /// Records `kernel` over `groups` workgroups with `params` as its uniform block.
    pub fn dispatch<P: ShaderParams>(&mut self, kernel: &Kernel, bind: &wgpu::BindGroup, params: &P, groups: [u32; 3]) {
        self.record(
            Dispatch { kind: kernel.label, workgroups: groups.iter().product(), weight_bytes: 0 },
            kernel,
            bind,
            params,
            groups,
        );
    }

    /// [`Encoder::dispatch`] of a product that reads `weight_bytes` of weights, counted as `kind`
    /// (one kernel serves several products).
    pub fn dispatch_product<P: ShaderParams>(
        &mut self,
        kind: &'static str,
        weight_bytes: u64,
        kernel: &Kernel,
        bind: &wgpu::BindGroup,
        params: &P,
        groups: [u32; 3],
    ) {
        self.record(Dispatch { kind, workgroups: groups.iter().product(), weight_bytes }, kernel, bind, params, groups);
    }

    fn record<P: ShaderParams>(
        &mut self,
        dispatch: Dispatch,
        kernel: &Kernel,
        bind: &wgpu::BindGroup,
        params: &P,
        groups: [u32; 3],
    ) {
        let params = bytemuck::bytes_of(params);
        debug_assert!(params.len() <= PARAM_BLOCK as usize);
        let stride = self.ctx.param_stride() as usize;
        if self.bytes.last().is_some_and(|b| b.len() + stride > PARAM_PAGE as usize) {
            self.bytes.push(Vec::new());
        }
        let page = self.bytes.len() - 1;
        let block = &mut self.bytes[page];
        let offset = block.len() as u32;
        block.extend_from_slice(params);
        block.resize(offset as usize + stride, 0);
        let params_bind = self.params.page(self.ctx, page);
        let timestamp_writes = self.timer.and_then(|t| t.writes(self.stamped));
        self.stamped += timestamp_writes.is_some() as usize;
        if self.pass.is_none() || timestamp_writes.is_some() {
            self.pass = None;
            let desc = wgpu::ComputePassDescriptor { label: None, timestamp_writes };
            self.pass = Some(self.encoder.begin_compute_pass(&desc).forget_lifetime());
        }
        let Some(pass) = self.pass.as_mut() else { return };
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, bind, &[]);
        pass.set_bind_group(1, params_bind, &[offset]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        self.recorded.push(dispatch);
    }

    pub fn copy(&mut self, src: &wgpu::Buffer, src_offset: u64, dst: &wgpu::Buffer, bytes: u64) {
        self.copy_at(src, src_offset, dst, 0, bytes);
    }

    pub fn copy_at(&mut self, src: &wgpu::Buffer, src_offset: u64, dst: &wgpu::Buffer, dst_offset: u64, bytes: u64) {
        self.pass = None;
        self.encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, bytes);
    }

    /// Writes the parameter pages, then submits the commands: the queue orders the writes first.
    pub fn submit(mut self) -> wgpu::SubmissionIndex {
        self.pass = None;
        if let Some(timer) = self.timer {
            timer.resolve(&mut self.encoder, self.stamped);
        }
        for (page, bytes) in self.bytes.iter().enumerate() {
            if !bytes.is_empty() {
                self.ctx.queue.write_buffer(&self.params.pages[page].0, 0, bytes);
            }
        }
        self.ctx.queue.submit([self.encoder.finish()])
    }
}

/// Dispatch size for `n` items in workgroups of `per_group`.
pub(crate) fn groups_for(n: usize, per_group: usize) -> u32 {
    n.div_ceil(per_group) as u32
}

/// Reads the first `bytes` of a MAP_READ buffer once `after` (default: the work submitted so far)
/// has finished. Natively this blocks in `poll`; in the browser the future resolves from the event
/// loop.
pub(crate) async fn read_back(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    bytes: u64,
    after: Option<wgpu::SubmissionIndex>,
) -> Result<Vec<u8>> {
    // The browser resolves the mapping itself once the buffer's work is done.
    #[cfg(target_arch = "wasm32")]
    let _ = after;
    let slice = buffer.slice(..bytes);
    let (send, receive) = oneshot();
    slice.map_async(wgpu::MapMode::Read, send);
    #[cfg(not(target_arch = "wasm32"))]
    ctx.device
        .poll(wgpu::PollType::Wait { submission_index: after, timeout: None })
        .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
    if let Err(e) = receive.await {
        ctx.check_alive()?;
        return Err(Error::Gpu(format!("reading GPU results failed: {e}")));
    }
    let data = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("reading GPU results failed: {e}")))?.to_vec();
    buffer.unmap();
    Ok(data)
}

/// Reads the first `bytes` of each storage buffer in `parts` with one copy submission and one
/// read-back, through a staging buffer made for the occasion (the inspector's captures are read
/// once, so they get no standing read-back buffer).
pub(crate) async fn read_storage(ctx: &GpuContext, parts: &[(&wgpu::Buffer, u64)]) -> Result<Vec<Vec<u8>>> {
    let total: u64 = parts.iter().map(|&(_, bytes)| bytes).sum();
    let staging = ctx.buffer("read-back", total, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
    let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    let mut at = 0;
    for &(buffer, bytes) in parts {
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, at, bytes);
        at += bytes;
    }
    ctx.queue.submit([encoder.finish()]);
    let all = read_back(ctx, &staging, total, None).await?;
    let mut rest = all.as_slice();
    Ok(parts
        .iter()
        .map(|&(_, bytes)| {
            let (part, tail) = rest.split_at(bytes as usize);
            rest = tail;
            part.to_vec()
        })
        .collect())
}

/// Resolves once the work submitted so far has finished.
pub(crate) async fn work_done(ctx: &GpuContext) -> Result<()> {
    let (send, receive) = oneshot();
    ctx.queue.on_submitted_work_done(move || send(()));
    #[cfg(not(target_arch = "wasm32"))]
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
    receive.await;
    Ok(())
}

pub(crate) fn bytes_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub(crate) fn u32_bytes(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A one-value channel whose receiving end is a future: wgpu reports a finished mapping through a
/// callback, and the async core awaits it without blocking the browser's thread.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

struct Receiver<T>(Arc<Mutex<Slot<T>>>);

fn oneshot<T: Send + 'static>() -> (impl FnOnce(T) + Send + 'static, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None }));
    let sender = slot.clone();
    let send = move |value: T| {
        let mut s = sender.lock().unwrap_or_else(|e| e.into_inner());
        s.value = Some(value);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    };
    (send, Receiver(slot))
}

impl<T> Future for Receiver<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::test_context;

    #[test]
    fn a_kernel_the_device_refuses_is_an_error_not_a_panic() {
        let ctx = test_context();
        let bad = "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }";
        let made = pollster::block_on(ctx.refusals("a test kernel", || Kernel::new(&ctx, "bad", bad, &[])));
        let Err(Error::Gpu(message)) = made else { panic!("a refused kernel passed") };
        assert!(message.starts_with("the GPU refused a test kernel: "), "{message}");
        let good = "@compute @workgroup_size(1) fn main() {}";
        assert!(pollster::block_on(ctx.refusals("a kernel", || Kernel::new(&ctx, "good", good, &[]))).is_ok());
    }
}
