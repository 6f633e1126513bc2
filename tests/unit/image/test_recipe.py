from ember.image import ImageRecipe
from ember.image.build import mmdebstrap_argv, sudoers


def test_digest_is_stable_and_follows_every_field() -> None:
    recipe = ImageRecipe()
    assert recipe.digest() == ImageRecipe().digest()
    assert recipe.image_id == recipe.digest()[:16]
    variants = [
        recipe.with_id_shift(1_000_000_000),
        ImageRecipe(packages=(*recipe.packages, "jq")),
        ImageRecipe(mirror="http://mirror.example/debian"),
        ImageRecipe(user="someone"),
    ]
    assert len({recipe.digest(), *(v.digest() for v in variants)}) == len(variants) + 1


def test_mmdebstrap_gets_every_package_and_source() -> None:
    recipe = ImageRecipe()
    argv = mmdebstrap_argv(recipe, "/tmp/target")
    assert argv[0] == "mmdebstrap" and "--mode=root" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert set(include.removeprefix("--include=").split(",")) == set(recipe.packages)
    for required in ("python3", "python3-venv", "nodejs", "npm", "git", "sudo", "zstd"):
        assert required in recipe.packages
    assert argv[-3:] == recipe.sources()
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in recipe.sources()


def test_sudoers_grants_passwordless_sudo_to_the_sandbox_user_only() -> None:
    text = sudoers(ImageRecipe())
    assert "vercel-sandbox ALL=(ALL:ALL) NOPASSWD: ALL" in text
    assert "always_set_home" in text
