"""Opening images defensively: every way an image can be bad becomes a reason, not a crash.

Missing paths, missing files, zero-byte or non-image files, truncated files and images too
large to decode safely all raise :class:`ImageError` with a short reason; callers turn that
into a null result plus the reason. Images come back fully decoded in the requested mode
(grayscale, CMYK, palette and alpha images are converted).
"""

from __future__ import annotations

from PIL import Image, UnidentifiedImageError

# Decoding a 20,000 x 20,000 image takes GBs; refuse anything past this many pixels.
MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An image could not be used; ``str(error)`` is the reason."""


def open_image(path: str | None, mode: str = "RGB", draft: tuple[int, int] | None = None) -> Image.Image:
    """The image at ``path``, fully decoded and converted to ``mode``.

    ``draft`` lets JPEG decode at a reduced scale no smaller than that size (much faster when
    only a thumbnail is needed).
    """
    if path is None or not str(path).strip():
        raise ImageError("missing image path")
    try:
        with Image.open(path) as image:
            w, h = image.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"image too large: {w}x{h} px")
            if draft is not None:
                image.draft(mode, draft)
            image.load()  # decode now, so truncated data fails here
            return image.convert(mode) if image.mode != mode else image.copy()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise ImageError("not a decodable image") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"unreadable image: {type(exc).__name__}: {exc}") from None


def try_open_image(
    path: str | None, mode: str = "RGB", draft: tuple[int, int] | None = None
) -> tuple[Image.Image | None, str | None]:
    """``(image, None)``, or ``(None, reason)`` when the image cannot be used."""
    try:
        return open_image(path, mode, draft), None
    except ImageError as exc:
        return None, str(exc)
