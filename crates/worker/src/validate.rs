//! Client-side checks of a worker's replies: a `generate` reply is only a result if its file
//! exists, decodes as an image and has exactly the requested size; a `detect` reply only if its
//! boxes index the queries and are finite.

use std::path::Path;

use crate::protocol::{DetectRequest, Detection};

/// Checks that `path` is a regular file that decodes completely as an image of `width`×`height`.
/// The error says what is wrong, naming the file.
pub fn check_image(path: &Path, width: u32, height: u32) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(format!("result file {shown} is not a regular file")),
        Err(e) => return Err(format!("result file {shown} does not exist: {e}")),
    }
    let image = image::ImageReader::open(path)
        .and_then(|reader| reader.with_guessed_format())
        .map_err(|e| format!("result file {shown} cannot be read: {e}"))?
        .decode()
        .map_err(|e| format!("result file {shown} is not a decodable image: {e}"))?;
    let (w, h) = (image.width(), image.height());
    if (w, h) != (width, height) {
        return Err(format!(
            "result file {shown} is {w}×{h}, but {width}×{height} was requested"
        ));
    }
    Ok(())
}

/// Checks the boxes of a `detect` reply against its request.
pub fn check_detections(request: &DetectRequest, detections: &[Detection]) -> Result<(), String> {
    for (i, d) in detections.iter().enumerate() {
        if d.query >= request.queries.len() {
            return Err(format!(
                "detection {i} names query {} but the request has {} queries",
                d.query,
                request.queries.len()
            ));
        }
        if !d.score.is_finite() || !d.bbox.iter().all(|v| v.is_finite()) {
            return Err(format!("detection {i} has a non-finite score or box"));
        }
        if d.bbox[2] < d.bbox[0] || d.bbox[3] < d.bbox[1] {
            return Err(format!(
                "detection {i} has box {:?}, not [x0, y0, x1, y1] with x0 ≤ x1 and y0 ≤ y1",
                d.bbox
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_an_image_of_the_requested_size_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.png");
        image::RgbImage::new(8, 6).save(&path).unwrap();
        assert_eq!(check_image(&path, 8, 6), Ok(()));
        let wrong = check_image(&path, 6, 8).unwrap_err();
        assert!(wrong.contains("8×6") && wrong.contains("6×8"), "{wrong}");
        let missing = check_image(&tmp.path().join("b.png"), 8, 6).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        let text = tmp.path().join("c.png");
        std::fs::write(&text, "not an image").unwrap();
        let bad = check_image(&text, 8, 6).unwrap_err();
        assert!(bad.contains("not a decodable image"), "{bad}");
        assert!(check_image(tmp.path(), 8, 6).is_err());
    }

    #[test]
    fn a_truncated_png_is_not_an_image() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.png");
        image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 7]))
            .save(&path)
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(check_image(&path, 64, 64).is_err());
    }

    #[test]
    fn detections_must_index_the_queries() {
        let request = DetectRequest {
            id: "d".into(),
            image: "/x.png".into(),
            queries: vec!["cat".into()],
        };
        let good = Detection {
            query: 0,
            score: 0.5,
            bbox: [0.0, 0.0, 4.0, 4.0],
        };
        assert_eq!(
            check_detections(&request, std::slice::from_ref(&good)),
            Ok(())
        );
        let bad_query = Detection {
            query: 1,
            ..good.clone()
        };
        assert!(check_detections(&request, &[bad_query]).is_err());
        let nan = Detection {
            score: f64::NAN,
            ..good.clone()
        };
        assert!(check_detections(&request, &[nan]).is_err());
        let flipped = Detection {
            bbox: [4.0, 0.0, 0.0, 4.0],
            ..good
        };
        assert!(check_detections(&request, &[flipped]).is_err());
    }
}
