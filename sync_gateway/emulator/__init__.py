"""A small, faithful emulator of the TheEye supervisor's job API that really runs tasks."""

from .app import EmulatorSettings, create_emulator_app
from .recipe import BUNDLED_RECIPE, Customer, Recipe, RecipeError, Task, load_recipe
from .server import EmulatorServer, run_emulator
from .state import EmulatorState, Job

__all__ = [
    "BUNDLED_RECIPE",
    "Customer",
    "EmulatorServer",
    "EmulatorSettings",
    "EmulatorState",
    "Job",
    "Recipe",
    "RecipeError",
    "Task",
    "create_emulator_app",
    "load_recipe",
    "run_emulator",
]
