//! PLACEHOLDER until the window model lands: max absolute z-score.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::Contribution;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowModel {
    names: Vec<String>,
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl WindowModel {
    pub fn fit(rows: &Array2<f64>, names: Vec<String>) -> Result<Self, String> {
        let mean = rows.mean_axis(ndarray::Axis(0)).ok_or("no rows")?.to_vec();
        let std = rows
            .std_axis(ndarray::Axis(0), 0.0)
            .mapv(|s| s.max(0.1))
            .to_vec();
        Ok(Self { names, mean, std })
    }

    pub fn score(&self, row: &[f64]) -> (f64, Vec<Contribution>) {
        let mut c: Vec<Contribution> = row
            .iter()
            .enumerate()
            .map(|(i, v)| Contribution {
                feature: self.names[i].clone(),
                value: *v,
                weight: ((v - self.mean[i]) / self.std[i]).abs(),
            })
            .collect();
        c.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        let z = c.first().map_or(0.0, |c| c.weight);
        (1.0 - (-z / 4.0).exp(), c)
    }
}
