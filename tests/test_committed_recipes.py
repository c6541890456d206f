"""Every committed recipe parses: the tokenizer cards' and the experiments beside the bundled
model (its stages are services/default/curriculum.toml: tests/test_curriculum.py)."""

from pathlib import Path

import pytest

from mmntp.train.audio_codec import load_codec_recipe
from mmntp.train.cochlear import load_cochlear_recipe
from mmntp.train.image_tokenizer import load_image_recipe
from mmntp.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
LOADERS = {"vq": load_image_recipe, "kl": load_image_recipe}
LOADERS |= {"codec": load_codec_recipe, "cochlear": load_cochlear_recipe}


@pytest.mark.parametrize("path", sorted((ROOT / "tokenizers").glob("*/recipe.toml")), ids=str)
def test_tokenizer_recipe_parses_and_writes_its_own_card(path):
    import tomllib

    kind = tomllib.loads(path.read_text())["kind"]
    recipe = LOADERS[kind](path)
    assert recipe.name == path.parent.name and recipe.output_dir() == path.parent.resolve()


@pytest.mark.parametrize(
    "path", sorted((ROOT / "services" / "default").glob("**/recipe*.toml")), ids=str
)
def test_model_recipes_parse(path):
    recipe = load_recipe(path)
    assert recipe.data.mixture and recipe.optim.max_steps > 0


def test_tokenizer_recipe_errors_name_the_field(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('name = "x"\nkind = "cochlear"\nbatch_size = 0\n')
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        load_cochlear_recipe(path)
    path.write_text('name = "x"\nkind = "codec"\nbogus = 1\n')
    with pytest.raises(ValueError, match="unknown recipe key bogus"):
        load_codec_recipe(path)
    path.write_text('name = "x"\n')
    with pytest.raises(ValueError, match="recipe needs a 'kind' key"):
        load_image_recipe(path)
