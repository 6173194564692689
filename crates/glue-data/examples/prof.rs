use glue_data::{load_split, Preprocessor, Task};
use std::time::Instant;
fn main() {
    let m = std::path::Path::new("../shared/glue-mirror");
    let pre = Preprocessor::from_file(std::path::Path::new(".venv/test-model"), 128).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let s = load_split(m, Task::Sst2, "train").unwrap();
        let t1 = t.elapsed();
        let e = pre.encode_split(&s).unwrap();
        println!("load {:?} encode {:?} n={}", t1, t.elapsed() - t1, e.len());
    }
}
