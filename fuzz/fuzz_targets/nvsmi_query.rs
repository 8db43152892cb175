//! `nvidia-smi -q` text output as the agent reads it: `parse_query` on the lossy UTF-8
//! of the command's output, then the agent's page (identities and rows) through the
//! ingest stage, as the server would after a push.

#![no_main]

mod common;

use gpuwarden_agent::WirePage;
use gpuwarden_collect::nvsmi_query::{parse_query, NvsmiQuery, NvsmiQueryError};
use libfuzzer_sys::fuzz_target;

fn check(q: &NvsmiQuery) {
    for (index, g) in q.gpus.iter().enumerate() {
        assert_eq!(g.identity.uuid, g.samples.gpu);
        assert_eq!(g.identity.index, Some(index as u32));
        assert_eq!(g.samples.ts_ms, common::NOW_MS);
        for (field, value) in &g.samples.values {
            // Absent readings are absent, never a made-up number: every value the parser
            // maps was a finite number (or a mode / flag) in the text.
            assert!(value.is_finite(), "{field} = {value}");
        }
        for p in &g.processes {
            assert_eq!(p.gpu, g.identity.uuid);
            if let Some(m) = p.used_memory_mib {
                assert!(m.is_finite());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let query = match parse_query(&text, "fuzz-node", common::NOW_MS) {
        Ok(q) => q,
        Err(NvsmiQueryError::Truncated { partial, found, .. }) => {
            assert!(partial.gpus.len() <= found);
            *partial
        }
        Err(_) => return,
    };
    check(&query);
    // The agent's page, as in `nvidia_smi_query`.
    let page = WirePage {
        source: "nvidia-smi".into(),
        gpus: query.gpus.iter().map(|g| g.identity.clone()).collect(),
        rows: query.gpus.iter().map(|g| g.samples.clone()).collect(),
    };
    let page = page.to_exporter_page();
    common::ingest("agent://fuzz-node/nvidia-smi", &[&page]);
});
