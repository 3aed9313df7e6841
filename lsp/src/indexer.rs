//! The background indexer: one task that applies disk-side jobs (index a root, refresh,
//! reload, remove) to the one workspace [`Index`] in order, off the protocol loop, and reports progress
//! as plain events for the shell to forward.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use ctxzip_chunker::index::{Index, Root};

/// Files read per batch: one progress report each.
const BATCH_FILES: usize = 256;

#[derive(Debug)]
pub enum Job {
    /// Walk and read a whole root (the initial index, or a new workspace folder).
    IndexRoot(PathBuf),
    /// Walk a root again for files that appeared, vanished or changed (file-created events,
    /// a save of a file the index does not hold).
    Rescan(PathBuf),
    /// Read these indexed files again (saved or changed on disk).
    Reload(Vec<PathBuf>),
    /// Drop these files or directories (deleted on disk).
    Remove(Vec<PathBuf>),
    /// Index every root from scratch (the ignore globs changed).
    Reindex,
}

/// What the indexer tells the shell, in order.
#[derive(Debug, Clone)]
pub enum Event {
    Begin {
        title: String,
    },
    Report {
        done_files: usize,
        total_files: usize,
    },
    End {
        message: String,
    },
    /// Something the user should know (a root that cannot be walked).
    Warning(String),
}

#[derive(Default)]
struct Counters {
    /// Jobs sent and not yet finished.
    queued: AtomicUsize,
    /// Whole-root jobs sent and not yet finished: while > 0, answers are partial.
    roots_pending: AtomicUsize,
    done_files: AtomicUsize,
    total_files: AtomicUsize,
}

/// A handle to the indexer task. Cheap to clone.
#[derive(Clone)]
pub struct Indexer {
    jobs: mpsc::UnboundedSender<Job>,
    counters: Arc<Counters>,
}

/// Indexing state for `ctxzip/status`.
#[derive(Debug, Clone, Copy)]
pub struct IndexerState {
    pub indexing: bool,
    pub queued_jobs: usize,
    pub done_files: usize,
    pub total_files: usize,
}

impl Indexer {
    /// Starts the indexer task on the current tokio runtime.
    pub fn start(index: Arc<Index>, events: mpsc::UnboundedSender<Event>) -> Indexer {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let counters = Arc::new(Counters::default());
        let task_counters = Arc::clone(&counters);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let whole_root = matches!(job, Job::IndexRoot(_) | Job::Reindex);
                run_job(&index, job, &events, &task_counters).await;
                if whole_root {
                    task_counters.roots_pending.fetch_sub(1, Ordering::SeqCst);
                }
                task_counters.queued.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Indexer { jobs, counters }
    }

    pub fn send(&self, job: Job) {
        if matches!(job, Job::IndexRoot(_) | Job::Reindex) {
            self.counters.roots_pending.fetch_add(1, Ordering::SeqCst);
        }
        self.counters.queued.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(job).is_err() {
            // The task is gone only when the runtime is shutting down.
            self.counters.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// True while a whole root is being indexed: answers are built from part of it.
    pub fn is_indexing(&self) -> bool {
        self.counters.roots_pending.load(Ordering::SeqCst) > 0
    }

    pub fn state(&self) -> IndexerState {
        IndexerState {
            indexing: self.is_indexing(),
            queued_jobs: self.counters.queued.load(Ordering::SeqCst),
            done_files: self.counters.done_files.load(Ordering::SeqCst),
            total_files: self.counters.total_files.load(Ordering::SeqCst),
        }
    }
}

async fn run_job(
    index: &Arc<Index>,
    job: Job,
    events: &mpsc::UnboundedSender<Event>,
    counters: &Arc<Counters>,
) {
    match job {
        Job::IndexRoot(dir) => {
            let root = match index.roots().into_iter().find(|r| r.path == dir) {
                Some(root) => root,
                None => return, // removed before its turn came
            };
            index_root(index, root, events, counters).await;
        }
        Job::Reindex => {
            for root in index.roots() {
                index.remove_root_files(&root.path);
                index_root(index, root, events, counters).await;
            }
        }
        Job::Rescan(dir) => {
            let index = Arc::clone(index);
            let result = tokio::task::spawn_blocking(move || {
                let root = index.roots().into_iter().find(|r| r.path == dir)?;
                Some(index.refresh(&root))
            })
            .await;
            if let Ok(Some(Err(err))) = result {
                let _ = events.send(Event::Warning(err.to_string()));
            }
        }
        Job::Reload(keys) => {
            let index = Arc::clone(index);
            let _ = tokio::task::spawn_blocking(move || index.reload(&keys)).await;
        }
        Job::Remove(keys) => {
            for key in keys {
                index.remove(&key);
            }
        }
    }
}

async fn index_root(
    index: &Arc<Index>,
    root: Root,
    events: &mpsc::UnboundedSender<Event>,
    counters: &Arc<Counters>,
) {
    let started = Instant::now();
    let _ = events.send(Event::Begin {
        title: format!("ctxzip: indexing {}", root.name),
    });
    let walk_index = Arc::clone(index);
    let walk_root = root.clone();
    let discovered = tokio::task::spawn_blocking(move || walk_index.discover(&walk_root)).await;
    let paths = match discovered {
        Ok(Ok(paths)) => paths,
        Ok(Err(err)) => {
            let _ = events.send(Event::Warning(err.to_string()));
            let _ = events.send(Event::End {
                message: format!("cannot index {}", root.path.display()),
            });
            return;
        }
        Err(join) => {
            let _ = events.send(Event::Warning(format!(
                "indexing {} failed: {join}",
                root.path.display()
            )));
            let _ = events.send(Event::End {
                message: "indexing failed".into(),
            });
            return;
        }
    };
    counters.done_files.store(0, Ordering::SeqCst);
    counters.total_files.store(paths.len(), Ordering::SeqCst);
    let total = paths.len();
    let mut loaded = 0;
    for (n, batch) in paths.chunks(BATCH_FILES).enumerate() {
        let batch_index = Arc::clone(index);
        let batch_root = root.clone();
        let batch: Vec<PathBuf> = batch.to_vec();
        let n_batch = batch.len();
        if let Ok(counts) =
            tokio::task::spawn_blocking(move || batch_index.load(&batch_root, &batch)).await
        {
            loaded += counts.loaded;
        }
        let done = (n * BATCH_FILES + n_batch).min(total);
        counters.done_files.store(done, Ordering::SeqCst);
        let _ = events.send(Event::Report {
            done_files: done,
            total_files: total,
        });
    }
    let (_, chunks, _) = index.counts();
    let _ = events.send(Event::End {
        message: format!(
            "indexed {loaded} files ({chunks} chunks in the index) in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    });
}
