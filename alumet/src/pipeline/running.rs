//! A started pipeline, and the changes it accepts while it runs: the
//! elements of a plugin stopped (sources polled a last time, transforms
//! finished, outputs flushed and closed) and those of a plugin started,
//! while every other element keeps running untouched (same threads, same
//! poll schedule, same counters). `PipelineBuilder::start` is the first
//! such addition, so there is one way elements start.

use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::metrics::MetricRegistry;

use super::control::{ControlError, PipelineHandle};
use super::messages::{
    ManagedSource, NamedTransform, OutputQueue, PollerCommand, StageCommand, StageMessage,
};
use super::output::OutputRunner;
use super::poller::Poller;
use super::registry::LocalMetrics;
use super::staging::{AutonomousContext, BufferSender, Elements, PluginStartContext, Staging};
use super::stats::{LossReporter, OutputStats, PipelineStatsSnapshot, TransformStats};
use super::topology::{AutonomousEntry, OutputEntry, PollerEntry, Topology, TransformEntry};
use super::PipelineError;

/// A started pipeline.
pub struct RunningPipeline {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) handle: PipelineHandle,
    pub(crate) stage_task: tokio::task::JoinHandle<()>,
    /// The `alumet_dropped_points` counter shared with loss reporters.
    pub(crate) dropped_points: Arc<AtomicU64>,
}

/// Plugins being started into a running pipeline: what they add is staged
/// (as with [`super::PipelineBuilder`]) and starts running at
/// [`PipelineExtension::commit`]. Element names are given as at the first
/// start, so a plugin stopped and started again keeps its names.
pub struct PipelineExtension<'p> {
    pipeline: &'p RunningPipeline,
    staging: Staging,
}

impl PipelineExtension<'_> {
    /// Runs `f` (usually a plugin's `start`) with a context for `plugin`;
    /// the elements it adds are kept only if it succeeds.
    pub fn with_plugin_context<T>(
        &mut self,
        plugin: &str,
        f: impl FnOnce(&mut PluginStartContext) -> Result<T, crate::error::PluginError>,
    ) -> Result<T, crate::error::PluginError> {
        self.staging.with_plugin_context(plugin, f)
    }

    /// Starts the staged elements: new metrics are published to every
    /// element, outputs and transforms join the stage, managed sources join
    /// the shared poller (on the ticks of sources with the same trigger) or
    /// get their own thread. Call from a plain thread, not from an async task.
    pub fn commit(self) -> Result<(), PipelineError> {
        let Staging {
            metrics,
            elements,
            plugin_order,
            ..
        } = self.staging;
        let inner = &self.pipeline.handle.inner;
        if metrics.len() > inner.metrics.current().len() {
            inner.metrics.publish(metrics);
        }
        inner.topology().plugin_order = plugin_order;
        self.pipeline.commit(elements, false)
    }
}

impl RunningPipeline {
    /// The control handle.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// The pipeline's tokio runtime, for plugins and the agent that need one.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Stages plugins to start into the running pipeline. Stop the
    /// plugins being replaced first ([`RunningPipeline::stop_plugins`]), so
    /// that their names are free again.
    pub fn extend(&self) -> PipelineExtension<'_> {
        let inner = &self.handle.inner;
        let topology = inner.topology();
        let staging = Staging {
            metrics: MetricRegistry::clone(&inner.metrics.current()),
            elements: Elements::default(),
            existing: topology.element_names(&inner.stats),
            exec_target: inner.exec_target.clone(),
            dropped_points: self.dropped_points.clone(),
            plugin_order: topology.plugin_order.clone(),
        };
        PipelineExtension {
            pipeline: self,
            staging,
        }
    }

    /// Starts `elements` (see [`PipelineExtension::commit`]); `first`: at
    /// the pipeline's start (where `first_poll_at_start` applies).
    pub(crate) fn commit(&self, elements: Elements, first: bool) -> Result<(), PipelineError> {
        let inner = &self.handle.inner;
        let config = &inner.config;
        let mut topology = inner.topology();
        let source_tx = topology.source_tx.clone().ok_or(PipelineError::Stopped)?;
        check_routes(&topology, &elements)?;

        let mut queues = Vec::new();
        for (plugin, name, output, options) in elements.outputs {
            let (tx, rx) = super::queue::bounded(config.output_queue_capacity);
            let stats = Arc::new(OutputStats::default());
            let runner = OutputRunner {
                name: name.clone(),
                output,
                thinner: options.thinned.then(Default::default),
                options,
                rx,
                stats: stats.clone(),
                loss: LossReporter::new(self.dropped_points.clone()),
                metrics: LocalMetrics::new(inner.metrics.clone()),
                config: config.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("out-{name}"))
                .spawn(move || runner.run())?;
            inner.stats.outputs.add(&plugin, &name, stats.clone());
            topology.outputs.push(OutputEntry {
                plugin: plugin.clone(),
                name: name.clone(),
                thread,
            });
            queues.push(OutputQueue {
                plugin,
                name,
                tx,
                stats,
            });
        }
        let transforms: Vec<NamedTransform> = elements
            .transforms
            .into_iter()
            .map(|(plugin, name, transform, scope)| {
                let stats = Arc::new(TransformStats::default());
                inner.stats.transforms.add(&plugin, &name, stats.clone());
                let rank = rank(&topology.plugin_order, &plugin);
                insert_by_rank(
                    &mut topology.transforms,
                    TransformEntry {
                        plugin: plugin.clone(),
                        name: name.clone(),
                        rank,
                        scope: scope.clone(),
                    },
                );
                NamedTransform {
                    rank,
                    plugin,
                    name,
                    transform,
                    scope,
                    stats,
                    disabled: false,
                }
            })
            .collect();
        // Ahead of any buffer of the new sources, in the same queue.
        if !transforms.is_empty() || !queues.is_empty() {
            drop(topology);
            inner
                .send_to_stage(StageCommand::Add {
                    transforms,
                    outputs: queues,
                })
                .map_err(|_| PipelineError::Stopped)?;
            topology = inner.topology();
        }

        let max_poll_interval = inner.config.max_poll_interval;
        let (dedicated, shared): (Vec<ManagedSource>, Vec<ManagedSource>) = elements
            .sources
            .into_iter()
            .map(|mut s| {
                if let Some(max) = max_poll_interval {
                    s.trigger = s.trigger.polled_at_most_every(max);
                }
                s
            })
            .partition(|s| s.trigger.dedicated_thread);
        for s in dedicated.iter().chain(&shared) {
            inner.stats.sources.add(&s.plugin, &s.name, s.stats.clone());
        }
        if !shared.is_empty() {
            let names: Vec<(String, String)> = shared
                .iter()
                .map(|s| (s.plugin.clone(), s.name.clone()))
                .collect();
            match topology.pollers.iter_mut().find(|p| !p.dedicated) {
                Some(p) => {
                    p.tx.send(PollerCommand::Add(shared))
                        .map_err(|_| PipelineError::Stopped)?;
                    p.sources.extend(names);
                }
                None => self.spawn_poller(&mut topology, shared, false, first, &source_tx)?,
            }
        }
        for s in dedicated {
            self.spawn_poller(&mut topology, vec![s], true, first, &source_tx)?;
        }

        for (plugin, name, factory) in elements.autonomous {
            let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
            let ctx = AutonomousContext {
                sender: BufferSender {
                    tx: source_tx.clone(),
                },
                shutdown: shutdown_rx,
            };
            let future = factory(ctx);
            let task_name = name.clone();
            let task = self.runtime.spawn(async move {
                if let Err(e) = future.await {
                    log::error!("source {task_name} stopped: {e}");
                }
            });
            topology.autonomous.push(AutonomousEntry {
                plugin,
                name,
                shutdown,
                task: Some(task),
            });
        }
        Ok(())
    }

    fn spawn_poller(
        &self,
        topology: &mut Topology,
        sources: Vec<ManagedSource>,
        dedicated: bool,
        first: bool,
        source_tx: &tokio::sync::mpsc::Sender<StageMessage>,
    ) -> Result<(), PipelineError> {
        let inner = &self.handle.inner;
        let (tx, rx) = mpsc::channel();
        let names = sources
            .iter()
            .map(|s| (s.plugin.clone(), s.name.clone()))
            .collect();
        let poller = Poller::new(
            sources,
            rx,
            source_tx.clone(),
            inner.stats.clone(),
            inner.config.max_points_per_buffer,
            // Sources a reload adds are polled at once, whatever the setting.
            inner.config.first_poll_at_start || !first,
        );
        let id = topology.next_poller_id;
        topology.next_poller_id += 1;
        let thread = std::thread::Builder::new()
            .name(format!("poller-{id}"))
            .spawn(move || poller.run())?;
        topology.pollers.push(PollerEntry {
            id,
            tx,
            sources: names,
            dedicated,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Stops every element of `plugins` while the others run on: their
    /// managed sources are polled a last time and their points queued,
    /// their autonomous sources are told to stop and awaited, then (behind
    /// those points) their transforms emit what they hold and leave, and
    /// their outputs write what is queued, flush and close. Returns once
    /// all of that is done, so the plugins can be stopped and started
    /// again (a file closed, a port free). Call from a plain thread.
    pub fn stop_plugins(&self, plugins: &[String]) -> Result<(), ControlError> {
        self.stop(plugins, false)
    }

    /// Like [`RunningPipeline::stop_plugins`], for plugins about to be
    /// started again: the buffers of the other sources that reach the
    /// transforms from then on are held until the new elements are
    /// committed (or [`RunningPipeline::release_held`]), so that a
    /// restarted output or transform misses none of them.
    pub fn stop_plugins_for_restart(&self, plugins: &[String]) -> Result<(), ControlError> {
        self.stop(plugins, true)
    }

    /// Lets the buffers held since [`RunningPipeline::stop_plugins_for_restart`]
    /// go on (committing an extension with transforms or outputs does it
    /// too); does nothing when none are held.
    pub fn release_held(&self) -> Result<(), ControlError> {
        self.handle.inner.send_to_stage(StageCommand::Release)
    }

    fn stop(&self, plugins: &[String], hold: bool) -> Result<(), ControlError> {
        let inner = &self.handle.inner;
        if self.handle.is_shutting_down() {
            return Err(ControlError::Stopped);
        }
        let concerns = |p: &String| plugins.contains(p);
        let mut asked = Vec::new();
        let tasks: Vec<tokio::task::JoinHandle<()>> = {
            let mut topology = inner.topology();
            for p in &mut topology.pollers {
                if p.sources.iter().any(|(plugin, _)| concerns(plugin)) {
                    let (done_tx, done_rx) = mpsc::channel();
                    if p.tx
                        .send(PollerCommand::Remove(plugins.to_vec(), done_tx))
                        .is_ok()
                    {
                        asked.push((p.id, done_rx));
                    }
                    p.sources.retain(|(plugin, _)| !concerns(plugin));
                }
            }
            let (leaving, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut topology.autonomous)
                .into_iter()
                .partition(|a| concerns(&a.plugin));
            topology.autonomous = staying;
            leaving
                .into_iter()
                .filter_map(|mut a| {
                    let _ = a.shutdown.send(true);
                    a.task.take()
                })
                .collect()
        };
        for (id, done) in asked {
            // A poller gone (`Err`) has nothing left either.
            if done.recv().unwrap_or(true) {
                let thread = {
                    let mut topology = inner.topology();
                    let at = topology.pollers.iter().position(|p| p.id == id);
                    at.and_then(|i| topology.pollers.remove(i).thread)
                };
                if thread.is_some_and(|t| t.join().is_err()) {
                    log::error!("a poller thread panicked");
                }
            }
        }
        self.runtime.block_on(async move {
            for t in tasks {
                let _ = t.await;
            }
        });
        let (done_tx, done_rx) = mpsc::channel();
        inner.send_to_stage(StageCommand::Remove {
            plugins: plugins.to_vec(),
            done: done_tx,
            hold,
        })?;
        done_rx.recv().map_err(|_| ControlError::Stopped)?;
        let threads: Vec<JoinHandle<()>> = {
            let mut topology = inner.topology();
            let (leaving, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut topology.outputs)
                .into_iter()
                .partition(|o| concerns(&o.plugin));
            topology.outputs = staying;
            topology.transforms.retain(|t| !concerns(&t.plugin));
            leaving.into_iter().map(|o| o.thread).collect()
        };
        for t in threads {
            if t.join().is_err() {
                log::error!("an output thread panicked");
            }
        }
        inner.stats.remove_plugins(plugins);
        Ok(())
    }

    /// Waits until the pipeline has stopped (after [`PipelineHandle::shutdown`]):
    /// every source polled a last time, every buffer written, every output
    /// closed. Call it from a plain thread, not from inside an async task.
    pub fn wait(self) -> PipelineStatsSnapshot {
        let inner = &self.handle.inner;
        let (pollers, tasks) = {
            let mut topology = inner.topology();
            let pollers: Vec<JoinHandle<()>> = topology
                .pollers
                .iter_mut()
                .filter_map(|p| p.thread.take())
                .collect();
            let tasks: Vec<tokio::task::JoinHandle<()>> = topology
                .autonomous
                .iter_mut()
                .filter_map(|a| a.task.take())
                .collect();
            (pollers, tasks)
        };
        for t in pollers {
            if t.join().is_err() {
                log::error!("a poller thread panicked");
            }
        }
        let stage_task = self.stage_task;
        self.runtime.block_on(async move {
            for t in tasks {
                let _ = t.await;
            }
            if stage_task.await.is_err() {
                log::error!("the transform stage panicked");
            }
        });
        let outputs = std::mem::take(&mut inner.topology().outputs);
        for o in outputs {
            if o.thread.join().is_err() {
                log::error!("an output thread panicked");
            }
        }
        let stats = self.handle.stats();
        self.runtime.shutdown_background();
        stats
    }

    /// Shuts down and waits (see [`RunningPipeline::wait`]).
    pub fn shutdown_and_wait(self) -> PipelineStatsSnapshot {
        self.handle.shutdown();
        self.wait()
    }
}

/// Places `entry` as the stage places its transform: after those of
/// the same or a lower rank.
fn insert_by_rank(list: &mut Vec<TransformEntry>, entry: TransformEntry) {
    let at = list.partition_point(|x| x.rank <= entry.rank);
    list.insert(at, entry);
}

/// Refuses `elements` if, with the running ones, two scoped transforms'
/// routes would cross (`routes.rs`), before anything of theirs starts.
fn check_routes(topology: &Topology, elements: &Elements) -> Result<(), PipelineError> {
    let scoped = |t: &TransformEntry| t.scope != super::routes::OutputScope::All;
    if !topology.transforms.iter().any(scoped)
        && !elements
            .transforms
            .iter()
            .any(|t| t.3 != super::routes::OutputScope::All)
    {
        return Ok(());
    }
    let mut transforms: Vec<TransformEntry> = topology
        .transforms
        .iter()
        .map(|t| TransformEntry {
            plugin: t.plugin.clone(),
            name: t.name.clone(),
            rank: t.rank,
            scope: t.scope.clone(),
        })
        .collect();
    for (plugin, name, _, scope) in &elements.transforms {
        insert_by_rank(
            &mut transforms,
            TransformEntry {
                plugin: plugin.clone(),
                name: name.clone(),
                rank: rank(&topology.plugin_order, plugin),
                scope: scope.clone(),
            },
        );
    }
    let outputs: Vec<(&str, &str)> = topology
        .outputs
        .iter()
        .map(|o| (o.plugin.as_str(), o.name.as_str()))
        .chain(
            elements
                .outputs
                .iter()
                .map(|(p, n, _, _)| (p.as_str(), n.as_str())),
        )
        .collect();
    let scopes: Vec<_> = transforms.iter().map(|t| &t.scope).collect();
    let plan = super::routes::plan(&scopes, &outputs);
    let named: Vec<(&str, &super::routes::OutputScope)> = transforms
        .iter()
        .map(|t| (t.name.as_str(), &t.scope))
        .collect();
    let output_names: Vec<&str> = outputs.iter().map(|o| o.1).collect();
    match super::routes::first_conflict(&plan, &named, &output_names) {
        Some(conflict) => Err(Box::new(conflict).into()),
        None => Ok(()),
    }
}

/// A plugin's rank in the order; one never named ranks after all the others.
fn rank(order: &[String], plugin: &str) -> usize {
    order
        .iter()
        .position(|p| p == plugin)
        .unwrap_or(order.len())
}
