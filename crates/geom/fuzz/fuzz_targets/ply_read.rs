//! Any bytes as a PLY or XYZ file: an error or data consistent with itself (attributes of
//! the vertex count, faces inside it) that writes back and reads back the same, never a
//! panic, a hang or an allocation sized by a header count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shapecast_geom::ply::{read_ply, read_xyz, write_ply};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = read_ply(data) {
        let n = d.vertices.len();
        assert!(d.labels.as_ref().is_none_or(|l| l.len() == n));
        assert!(d.confidence.as_ref().is_none_or(|c| c.len() == n));
        assert!(d.faces.iter().flatten().all(|&i| (i as usize) < n));
        let mut out = Vec::new();
        write_ply(&mut out, &d).expect("read data must write");
        let back = read_ply(&out).expect("written data must read");
        // NaN != NaN: compare bit patterns
        let bits =
            |v: &[[f32; 3]]| -> Vec<[u32; 3]> { v.iter().map(|p| p.map(f32::to_bits)).collect() };
        assert_eq!(bits(&back.vertices), bits(&d.vertices));
        assert_eq!(back.faces, d.faces);
        assert_eq!(back.labels, d.labels);
    }
    let _ = read_xyz(data);
});
