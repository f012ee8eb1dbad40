//! The eight evaluation sets load from the shared data folder with their declared row counts and
//! checksums, and their quirks handled (AIME25's form feeds, AMC's float answers).

use crate::common;

use kvbench::data::{definitions, select};

#[test]
fn every_dataset_loads_with_its_declared_rows_and_checksum() {
    let dir = common::data_dir();
    if !dir.is_dir() {
        assert!(std::env::var("CI").is_err(), "datasets missing at {}", dir.display());
        eprintln!("skipping: no datasets at {}", dir.display());
        return;
    }
    for def in definitions().unwrap() {
        let rows = def.load(&dir).unwrap();
        assert_eq!(Some(rows.len()), def.rows, "{}", def.name);
        assert_eq!(Some(def.file_sha256(&dir).unwrap()), def.sha256, "{}", def.name);
        assert!(rows.iter().all(|q| !q.question.trim().is_empty()), "{}", def.name);
        // Two GaoKao rows ship without an answer (it can never be graded correct); none elsewhere.
        let empty = rows.iter().filter(|q| q.reference.trim().is_empty()).count();
        assert_eq!(empty, if def.name == "gaokao2023en" { 2 } else { 0 }, "{}: empty references", def.name);
        assert!(rows.iter().all(|q| !q.question.contains('\u{c}')), "{}: form feed left", def.name);
    }
    let aime25 = kvbench::data::definition("aime25").unwrap().load(&dir).unwrap();
    assert!(aime25.iter().any(|q| q.question.contains("\\frac")));
    let amc = kvbench::data::definition("amc23").unwrap().load(&dir).unwrap();
    assert_eq!(amc[0].reference, "27.0");
    let picked = select(amc.clone(), None, Some(&[3, 1])).unwrap();
    assert_eq!(picked.iter().map(|q| q.index).collect::<Vec<_>>(), vec![3, 1]);
    assert_eq!(select(amc.clone(), Some(2), None).unwrap().len(), 2);
    assert!(select(amc, None, Some(&[99])).unwrap_err().to_string().contains("out of range"));
}
