"""Data: the synthetic benchmark and the loaders for real amodal annotation schemas."""

from .dataset import (COCOA_CLS_LEVELS, COCOA_VEHICLES, KINS_LEVELS, KINS_VEHICLES, PROTOCOLS,
                      SCHEMAS, AmodalDataset, collate, detect_schema, occlusion_level)
from .masks import AnnotationError

__all__ = ["AmodalDataset", "AnnotationError", "collate", "detect_schema", "occlusion_level",
           "SCHEMAS", "PROTOCOLS", "KINS_LEVELS", "COCOA_CLS_LEVELS", "KINS_VEHICLES",
           "COCOA_VEHICLES"]
