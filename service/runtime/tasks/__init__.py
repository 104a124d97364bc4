"""Tasks: the units of work a Kafka Streams engineer expects, one per partition, behind one interface.

- ``SourceTask`` (``source.py``): one source partition, routed to the
  repartition topics of the pipelines reading it. No state.
- ``WindowTask`` (``window.py``): one partition of a pipeline's repartition
  topic, with its own store and stream time, driving a ``WindowProcessor``.
- ``DirectTask`` (``direct.py``): partition i of every co-partitioned source
  of a pipeline grouped by the record key, read without a repartition topic.

Every one is a ``Task`` (``base.py``): the loop and the task manager route
records to it, tell it about its inputs, punctuate it and take it through a
commit without knowing which kind it is, and its state machine forbids any
step it should not take. All write only through the record collector.
"""

from service.runtime.tasks.base import AlignmentInput, IllegalTransition, Task, TaskState
from service.runtime.tasks.direct import DirectTask
from service.runtime.tasks.source import SourceTask
from service.runtime.tasks.window import WATERMARKS, WindowTask

__all__ = ["WATERMARKS", "AlignmentInput", "DirectTask", "IllegalTransition", "SourceTask", "Task", "TaskState", "WindowTask"]
