//! The image-transformer trunk shared by DINOv2 and DINO v1: patch embedding, CLS token, position
//! table (resampled per input size, cached), optional register tokens, blocks and final LayerNorm.
//!
//! [`crate::dinov2::Dinov2`] and [`crate::dino::Dino`] differ only in their config files and tensor
//! names; both build a [`VitTrunk`] and return its CLS embedding.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{D, Tensor};

use crate::checkpoint::Vb;
use crate::error::{Error, Result};
use crate::interpolate::{Interpolation, resize_table};
use crate::nn::{Block, LayerNorm, PatchEmbed, run_blocks};

/// A ViT returning the CLS token after the final LayerNorm.
pub struct VitTrunk {
    patch: PatchEmbed,
    cls: Tensor,
    registers: Option<Tensor>,
    /// `(1 + M², dim)`.
    positions: Tensor,
    grid: usize,
    blocks: Vec<Block>,
    norm: LayerNorm,
    interpolation: Interpolation,
    cache: Mutex<HashMap<(usize, usize), Tensor>>,
    dim: usize,
}

/// Tensor names of the embedding part.
pub struct EmbeddingNames {
    pub cls: &'static str,
    pub positions: &'static str,
    pub patch: &'static str,
    pub registers: &'static str,
}

impl VitTrunk {
    /// Loads the embeddings from `vb_emb` and takes the already loaded blocks and final norm.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb_emb: &Vb,
        names: &EmbeddingNames,
        dim: usize,
        channels: usize,
        patch: usize,
        image_size: usize,
        registers: usize,
        blocks: Vec<Block>,
        norm: LayerNorm,
        interpolation: Interpolation,
    ) -> Result<Self> {
        let grid = image_size / patch;
        let cls = vb_emb.get(&[1, 1, dim], names.cls)?;
        let positions = vb_emb
            .get(&[1, grid * grid + 1, dim], names.positions)?
            .squeeze(0)?;
        let registers = if registers > 0 {
            Some(vb_emb.get(&[1, registers, dim], names.registers)?)
        } else {
            None
        };
        let patch = PatchEmbed::load(vb_emb, names.patch, channels, patch, dim, true)?;
        Ok(Self {
            patch,
            cls,
            registers,
            positions,
            grid,
            blocks,
            norm,
            interpolation,
            cache: Mutex::new(HashMap::new()),
            dim,
        })
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The position table for a `rows × cols` patch grid, `(1 + rows·cols, dim)`.
    fn positions(&self, rows: usize, cols: usize) -> Result<Tensor> {
        // As both references: the stored table is used unchanged at the native square grid.
        if rows == self.grid && cols == self.grid {
            return Ok(self.positions.clone());
        }
        if self.registers.is_some() {
            // transformers resamples register models with antialiased bicubic (a = −0.5), which
            // this crate does not implement; refuse rather than silently differ.
            return Err(Error::Input(format!(
                "register models run only at their native {0}×{0} patch grid, got {rows}×{cols}",
                self.grid
            )));
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.get(&(rows, cols)) {
            return Ok(t.clone());
        }
        tracing::debug!(
            rows,
            cols,
            mode = self.interpolation.as_str(),
            "resampling positions"
        );
        let cls = self.positions.narrow(0, 0, 1)?;
        let table = self
            .positions
            .narrow(0, 1, self.grid * self.grid)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let resized = resize_table(&table, self.grid, self.dim, rows, cols, self.interpolation);
        let resized = Tensor::from_vec(resized, (rows * cols, self.dim), cls.device())?;
        let table = Tensor::cat(&[&cls, &resized], 0)?;
        cache.insert((rows, cols), table.clone());
        Ok(table)
    }

    /// `pixels`: `(n, channels, h, w)` f32 → `(n, dim)` CLS embeddings.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = pixels.dims4().map_err(|_| {
            Error::Input(format!("expected N×C×H×W pixels, got {:?}", pixels.dims()))
        })?;
        let (rows, cols) = self.patch.grid(h, w)?;
        let x = self.patch.forward(pixels)?;
        let cls = self.cls.broadcast_as((n, 1, self.dim))?;
        let x = Tensor::cat(&[&cls, &x], 1)?;
        let x = x.broadcast_add(&self.positions(rows, cols)?)?;
        let x = match &self.registers {
            Some(r) => {
                let r = r.broadcast_as((n, r.dim(1)?, self.dim))?;
                let rest = x.dim(1)? - 1;
                Tensor::cat(&[&x.narrow(1, 0, 1)?, &r, &x.narrow(1, 1, rest)?], 1)?
            }
            None => x,
        };
        let x = run_blocks(&self.blocks, x, false)?;
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        let out = self.norm.forward(&cls)?;
        debug_assert_eq!(out.dim(D::Minus1)?, self.dim);
        Ok(out)
    }
}
