# Sourced by a recipe's local/data.sh (stage 0) after it lists its options in data_option_names:
#   --some-option value  sets the shell variable some_option.
# Every option is required: steps/stages.sh passes them all from run.sh, the one place their defaults
# are declared. An unknown or missing option is an error.
_not_given='<not given>'
for _name in $data_option_names; do printf -v "$_name" '%s' "$_not_given"; done
spk_option_names=$data_option_names
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1'" >&2; exit 1; }
for _name in $data_option_names; do
  if [ "${!_name}" = "$_not_given" ]; then
    echo "$0: option --${_name//_/-} is missing; run stage 0 through the recipe (./run.sh --stage 0 --stop-stage 0)," \
      "which passes every option with its default" >&2
    exit 1
  fi
done
