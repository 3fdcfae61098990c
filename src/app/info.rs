//! `shapecast info MODEL`: what the runtime reads from a model; refuses a bad one.

use std::path::Path;

use anyhow::Context;

use crate::model::{LoadOptions, Model};

/// Prints the model's contract metadata and tensors. Errors name the broken item.
pub fn info(path: &Path) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let m = Model::load_with(path, LoadOptions::default())
        .with_context(|| format!("refusing model {}", path.display()))?;
    let load = t.elapsed();
    println!("model         {}", path.display());
    print!("{}", m.meta);
    println!("file bytes    {}", m.file_bytes);
    print_net("network", &m.net);
    if let Some(d) = &m.decoder {
        println!("decoder       {}", d.path.display());
        print_net("decoder net", &d.net);
        println!("decoder batch {} queries per run", d.chunk);
    }
    println!(
        "loaded in     {:.1} ms (parse, check, optimise)",
        load.as_secs_f64() * 1e3
    );
    println!("ok: the model follows contract {}", m.meta.contract);
    Ok(())
}

fn print_net(title: &str, n: &crate::model::Net) {
    for (name, s) in n.inputs.iter().zip(&n.input_shapes) {
        println!("{title:<13} input  {name} {s:?} f32");
    }
    for (name, s) in n.outputs.iter().zip(&n.output_shapes) {
        println!("{title:<13} output {name} {s:?} f32");
    }
}
