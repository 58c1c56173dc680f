# Sourced by a recipe's run.sh after it sets its defaults and lists them in recipe_option_names:
#   --some-option value  sets the recipe's shell variable some_option;
# every other argument is kept, in order, in the array stage_args for steps/stages.sh
# (which rejects what it does not know). --help lists the recipe's options, then stages.sh's.
# recipe_args then holds every recipe option as --name value, for the recipe's local/data.sh:
#   exec steps/stages.sh ... "${stage_args[@]}" -- "${recipe_args[@]}"
stage_args=()
while [ $# -gt 0 ]; do
  _name="${1#--}"; _name="${_name//-/_}"
  if [[ "$1" == --* ]] && [[ " ${recipe_option_names:-} " == *" $_name "* ]]; then
    if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
    printf -v "$_name" '%s' "$2"
    shift 2
    continue
  fi
  if [ "$1" = --help ] || [ "$1" = -h ]; then
    echo "recipe options (current values):" >&2
    for _name in ${recipe_option_names:-}; do echo "  --${_name//_/-} ${!_name}" >&2; done
  fi
  stage_args+=("$1")
  shift
done
recipe_args=()
for _name in ${recipe_option_names:-}; do recipe_args+=("--${_name//_/-}" "${!_name}"); done
