//! The recent past, one point per refresh, for the sparkline.
use std::collections::VecDeque;

use super::window::Window;

/// One refresh interval, as rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Nanoseconds per second spent waiting on vmap paths.
    pub vmap_wait_per_s: f64,
    /// Nanoseconds per second spent waiting on any lock.
    pub all_wait_per_s: f64,
    /// Seconds the interval lasted (longer than `--interval` after a pause).
    pub secs: f64,
}

/// A bounded ring of points, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    points: VecDeque<Point>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> History {
        History {
            points: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, interval: &Window) {
        let p = &interval.profile;
        self.push_point(Point {
            vmap_wait_per_s: rate_f(p.vmap_wait_ns(), interval.secs()),
            all_wait_per_s: rate_f(p.total_wait().total_ns, interval.secs()),
            secs: interval.secs(),
        });
    }

    pub fn push_point(&mut self, point: Point) {
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The newest `n` points, oldest first.
    pub fn last(&self, n: usize) -> impl Iterator<Item = &Point> {
        self.points.iter().skip(self.points.len().saturating_sub(n))
    }

    pub fn newest(&self) -> Option<&Point> {
        self.points.back()
    }
}

fn rate_f(ns: u64, secs: f64) -> f64 {
    crate::report::per_second(ns, secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(v: f64) -> Point {
        Point {
            vmap_wait_per_s: v,
            all_wait_per_s: v * 2.0,
            secs: 1.0,
        }
    }

    #[test]
    fn keeps_the_newest_points() {
        let mut h = History::new(3);
        assert!(h.is_empty());
        for v in 1..=5 {
            h.push_point(point(v as f64));
        }
        assert_eq!(h.len(), 3);
        let last: Vec<f64> = h.last(2).map(|p| p.vmap_wait_per_s).collect();
        assert_eq!(last, vec![4.0, 5.0]);
        assert_eq!(h.last(10).count(), 3);
        assert_eq!(h.newest().unwrap().all_wait_per_s, 10.0);
    }

    #[test]
    fn points_are_rates_of_the_interval() {
        let p = crate::profile::tests::sample_profile();
        let w = Window::between(&super::super::window::zero_like(&p), &p);
        let mut h = History::new(10);
        h.push(&w);
        let pt = h.newest().unwrap();
        // 50 us of vmap wait and 450 us in all over 2 s
        assert_eq!(pt.vmap_wait_per_s, 25_000.0);
        assert_eq!(pt.all_wait_per_s, 225_000.0);
        assert_eq!(pt.secs, 2.0);
    }
}
