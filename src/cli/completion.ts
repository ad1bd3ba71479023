/**
 * Shell completion scripts. Both ask rated itself what may follow the words
 * typed so far (`rated __complete rated list --s` prints `--sort`), so they
 * never go out of date with the commands.
 */
export function completionScript(shell: 'bash' | 'zsh'): string {
  if (shell === 'zsh') {
    return `#compdef rated
###-begin-rated-completions-###
#
# rated command completion script for zsh
#
# Installation: rated completion zsh > "\${fpath[1]}/_rated"
#
_rated_completions() {
  local reply
  local si=$IFS
  IFS=$'\\n' reply=($(COMP_CWORD="$((CURRENT-1))" COMP_LINE="$BUFFER" COMP_POINT="$CURSOR" rated __complete "\${words[@]}"))
  IFS=$si
  _describe 'values' reply
}
compdef _rated_completions rated
###-end-rated-completions-###
`;
  }
  return `###-begin-rated-completions-###
#
# rated command completion script for bash
#
# Installation: rated completion bash > /etc/bash_completion.d/rated
#
_rated_completions() {
  local cur_word args type_list
  cur_word="\${COMP_WORDS[COMP_CWORD]}"
  args=("\${COMP_WORDS[@]:0:COMP_CWORD+1}")
  type_list=$(rated __complete "\${args[@]}")
  COMPREPLY=( $(compgen -W "\${type_list}" -- "\${cur_word}") )
  return 0
}
complete -o bashdefault -o default -F _rated_completions rated
###-end-rated-completions-###
`;
}
