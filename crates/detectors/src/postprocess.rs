//! Post-processing as transformers' `post_process_object_detection`, plus per-query NMS.
//!
//! For every patch: the query with the highest logit is the label, `sigmoid(logit)` the score;
//! patches scoring above `threshold` (strictly) are kept, in patch order. Boxes go from
//! `(cx, cy, w, h)` in `[0, 1]` to absolute `(x0, y0, x1, y1)`: OWL-ViT scales x by the image
//! width and y by its height; OWLv2 scales both by `max(width, height)`, because its boxes are
//! relative to the padded square (so boxes may extend into the padding; they are not clipped, as in
//! transformers).

use serde::{Deserialize, Serialize};

use crate::owl::OwlVariant;

/// One detected instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Index of the query (subject) this box was assigned to.
    pub query: usize,
    /// `sigmoid` of the class logit, in `(0, 1)`.
    pub score: f32,
    /// `[x0, y0, x1, y1]` in pixels of the original image.
    pub bbox: [f32; 4],
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `logits`: `patches × queries` row-major; `boxes`: `patches × 4` `(cx, cy, w, h)`; `image`:
/// `(width, height)` of the original image.
pub fn post_process(
    logits: &[f32],
    boxes: &[f32],
    queries: usize,
    threshold: f32,
    image: (u32, u32),
    variant: OwlVariant,
) -> Vec<Detection> {
    if queries == 0 {
        return Vec::new();
    }
    let (w, h) = (image.0 as f32, image.1 as f32);
    let (sx, sy) = match variant {
        OwlVariant::OwlVit => (w, h),
        OwlVariant::Owlv2 => (w.max(h), w.max(h)),
    };
    logits
        .chunks_exact(queries)
        .zip(boxes.chunks_exact(4))
        .filter_map(|(row, b)| {
            // torch.max returns the first maximal index.
            let (query, best) =
                row.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |acc, (i, v)| {
                            if v > acc.1 { (i, v) } else { acc }
                        },
                    );
            let score = sigmoid(best);
            (score > threshold).then(|| {
                let (cx, cy, bw, bh) = (b[0], b[1], b[2], b[3]);
                Detection {
                    query,
                    score,
                    bbox: [
                        (cx - 0.5 * bw) * sx,
                        (cy - 0.5 * bh) * sy,
                        (cx + 0.5 * bw) * sx,
                        (cy + 0.5 * bh) * sy,
                    ],
                }
            })
        })
        .collect()
}

/// Intersection over union of two `[x0, y0, x1, y1]` boxes (0 when the union is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy non-maximum suppression within each query: in descending score order (ties keep the
/// earlier detection first), a box is dropped when its IoU with a kept box of the same query
/// exceeds `iou_threshold`. Returns the kept detections sorted by descending score.
pub fn nms_per_query(detections: &[Detection], iou_threshold: f32) -> Vec<Detection> {
    let mut order: Vec<usize> = (0..detections.len()).collect();
    order.sort_by(|&a, &b| detections[b].score.total_cmp(&detections[a].score));
    let mut kept: Vec<Detection> = Vec::new();
    for i in order {
        let d = detections[i];
        let suppressed = kept
            .iter()
            .any(|k| k.query == d.query && iou(&k.bbox, &d.bbox) > iou_threshold);
        if !suppressed {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(query: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { query, score, bbox }
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 1.0, 3.0, 3.0]), 1.0 / 7.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn nms_suppresses_within_a_query_only() {
        let dets = [
            det(0, 0.5, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.9, [1.0, 1.0, 11.0, 11.0]),
            det(1, 0.7, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.4, [50.0, 50.0, 60.0, 60.0]),
        ];
        let kept = nms_per_query(&dets, 0.3);
        assert_eq!(kept, vec![dets[1], dets[2], dets[3]]);
        // A threshold of 1 keeps everything (IoU never exceeds 1).
        assert_eq!(nms_per_query(&dets, 1.0).len(), 4);
    }

    #[test]
    fn post_process_scales_per_variant() {
        let logits = [0.0, 2.0, -5.0, -6.0];
        let boxes = [0.5, 0.5, 0.25, 0.5, 0.125, 0.125, 0.125, 0.125];
        let v1 = post_process(&logits, &boxes, 2, 0.5, (200, 100), OwlVariant::OwlVit);
        assert_eq!(v1.len(), 1);
        assert_eq!(v1[0].query, 1);
        assert_eq!(v1[0].bbox, [75.0, 25.0, 125.0, 75.0]);
        let v2 = post_process(&logits, &boxes, 2, 0.5, (200, 100), OwlVariant::Owlv2);
        assert_eq!(v2[0].bbox, [75.0, 50.0, 125.0, 150.0]);
    }
}
