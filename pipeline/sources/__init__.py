"""Landing-zone sources: the demo data generator and its data contract.

Call the generator as ``from pipeline.sources.generate import generate``. This
package deliberately does not re-export the function, so that the name
``pipeline.sources.generate`` always means the module.
"""

from pipeline.sources.contract import (
    DEFECT_NAMES,
    DEFECTS_BY_SOURCE,
    INFORMATIONAL,
    SOURCES,
)

__all__ = ["DEFECT_NAMES", "DEFECTS_BY_SOURCE", "INFORMATIONAL", "SOURCES"]
