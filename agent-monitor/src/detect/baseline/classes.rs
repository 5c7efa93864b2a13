//! The baselines of all classes: which are learning and which are stable, and the on-line loop
//! that scores each closed window and learns from the healthy ones.

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::Arc,
};

use serde::Serialize;

use super::{
    class::{ClassModel, MAX_KEPT_WINDOWS, WindowScore, kept},
    store::{self, ModelError, ModelMeta},
};
use crate::detect::window::Window;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Collecting healthy windows; nothing is scored yet.
    Learning,
    /// A model is in force and every window is scored.
    Stable,
}

/// How a baseline learns on-line.
#[derive(Clone, Debug)]
pub struct LearningPolicy {
    /// Healthy windows needed before a class without a model becomes stable.
    pub min_windows: usize,
    /// Healthy windows between two refits of a stable class.
    pub refit_every: u64,
    /// Windows scoring at or above this are not healthy (not learned from).
    pub healthy_below: f64,
}

impl Default for LearningPolicy {
    fn default() -> Self {
        Self {
            min_windows: 30,
            refit_every: 360,
            healthy_below: 0.5,
        }
    }
}

pub struct ClassBaseline {
    pub state: State,
    pub model: Option<ClassModel>,
    /// Where the model came from: a file's metadata, or `None` when learned on-line.
    pub meta: Option<ModelMeta>,
    kept: VecDeque<Window>,
    since_refit: u64,
}

impl ClassBaseline {
    fn learning() -> Self {
        Self {
            state: State::Learning,
            model: None,
            meta: None,
            kept: VecDeque::new(),
            since_refit: 0,
        }
    }
}

#[derive(Default)]
pub struct Baselines {
    classes: HashMap<Arc<str>, ClassBaseline>,
    policy: LearningPolicy,
}

impl Baselines {
    pub fn new(policy: LearningPolicy) -> Self {
        Self {
            classes: HashMap::new(),
            policy,
        }
    }

    /// Loads every class model under `dir`. A bad model is an error: the daemon must not start
    /// believing a class is covered when it is not.
    pub fn load_dir(&mut self, dir: &Path) -> Result<Vec<String>, ModelError> {
        let classes = store::classes(dir);
        for class in &classes {
            let (model, meta): (ClassModel, ModelMeta) = store::load(dir, class)?;
            self.install(class, model, Some(meta));
        }
        Ok(classes)
    }

    pub fn install(&mut self, class: &str, model: ClassModel, meta: Option<ModelMeta>) {
        let b = self
            .classes
            .entry(Arc::from(class))
            .or_insert_with(ClassBaseline::learning);
        b.state = State::Stable;
        b.model = Some(model);
        b.meta = meta;
    }

    pub fn get(&self, class: &str) -> Option<&ClassBaseline> {
        self.classes.get(class)
    }

    pub fn state(&self, class: &str) -> State {
        self.classes.get(class).map_or(State::Learning, |b| b.state)
    }

    /// Scores a closed window against its class (when stable) and learns from it when it is
    /// healthy: not lossy, its agent not contained, and not itself anomalous.
    pub fn observe(&mut self, window: &Window, contained: bool) -> Option<WindowScore> {
        if !window.steady() {
            return None;
        }
        let policy = &self.policy;
        let b = self
            .classes
            .entry(window.agent.class.clone())
            .or_insert_with(ClassBaseline::learning);
        let score = b.model.as_ref().and_then(|m| match m.score(window) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("class {}: window not scored: {e}", window.agent.class);
                None
            }
        });
        let healthy = !window.lossy()
            && !contained
            && score
                .as_ref()
                .is_none_or(|s| s.score < policy.healthy_below);
        if !healthy {
            return score;
        }
        if b.kept.len() >= MAX_KEPT_WINDOWS {
            b.kept.pop_front();
        }
        b.kept.push_back(kept(window));
        b.since_refit += 1;
        let due = match b.state {
            State::Learning => b.kept.len() >= policy.min_windows,
            State::Stable => b.since_refit >= policy.refit_every,
        };
        if due {
            let windows: Vec<&Window> = b.kept.iter().collect();
            match ClassModel::fit(&window.agent.class, &windows, policy.min_windows) {
                Ok(model) => {
                    log::info!(
                        "class {}: baseline fitted on-line from {} healthy windows",
                        window.agent.class,
                        windows.len()
                    );
                    b.model = Some(model);
                    b.meta = None;
                    b.state = State::Stable;
                }
                Err(e) => log::warn!("{e}"),
            }
            b.since_refit = 0;
        }
        score
    }
}
